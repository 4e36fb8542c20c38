"""The Fashion-MNIST image bench shared by the image plug-ins (maskgit, meissonic); not a plug-in itself.

``fashion_mnist`` reads the Debian package's idx files, ``patch_vq`` is a k-means tokenizer of 4 x 4
patches, ``classifier`` the committed evaluation CNN, ``metrics.ImageQuality`` FD / IS / PRDC / class
accuracy in its features, ``data.FashionMNISTTokens`` the images as codes, ``grid.ImageGrid`` a PNG
of samples, ``floor`` what real images score through a tokenizer. ``build_assets`` rebuilds the
committed tokenizer and CNN in ``assets/``.
"""
