"""Models: the prototype's seed CNN and autoencoder, the pretrained EfficientNet-Lite0 backbone,
and heads on its features. Each follows one small protocol (see base.py), registered by name."""
