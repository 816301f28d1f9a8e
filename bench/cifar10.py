"""CIFAR-10 benchmark: test accuracy of the cifar10 recipe and its training time.

Target: at least 90% test accuracy within 15 minutes of training on a 2-core CPU, with an
AlexNet-family network (the paper's own CIFAR-10 network reached 89%). Training time counts the
optimisation steps; the wall time printed beside it also counts decoding, per-epoch
evaluation and the report.

    python bench/cifar10.py --data ../shared/data/cifar10-jpeg.tar.gz [--set KEY=VALUE ...] [--isa avx2]
"""

from accuracy import main

if __name__ == "__main__":
    main(__doc__, "cifar10", target_acc=0.90, target_s=900.0)
