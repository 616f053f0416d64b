X='backends'
