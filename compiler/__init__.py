X='compiler'
