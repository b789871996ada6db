"""A ptflow plugin: `resnet_small`, a residual convnet for small images, and `shapes`, a dataset
of drawn circles, squares, triangles and crosses that needs no download."""

__version__ = "0.1.0"
