X='ir'
