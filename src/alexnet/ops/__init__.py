"""The network's own operations, below everything else in the package: local response
normalisation (:mod:`.lrn`: the PyTorch reference, the compiled CPU kernel and the Triton
kernels of :mod:`.lrn_triton`), Winograd's convolutions for float32 inference
(:mod:`.winograd`), and the build of the compiled kernels (:mod:`.native`, from ``csrc/``).
They import nothing of the package but its file and cache helpers."""
