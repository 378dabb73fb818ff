"""The compiler half: decomposition, distillation, metrics and verified ONNX export.

Importing this package is cheap; each submodule imports torch (and friends) itself.
"""
