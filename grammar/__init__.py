X='grammar'
