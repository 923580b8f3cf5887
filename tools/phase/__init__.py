"""The phase room: the temporal phase segmenter, its tools, annotations, features and training."""
