"""Reading examples from local files and Hub datasets into one table shape."""
