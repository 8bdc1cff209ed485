"""One small recipe per figure or table of the paper. Each returns data, draws a figure and writes files."""
