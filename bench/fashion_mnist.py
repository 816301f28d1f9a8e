"""The main job's benchmark: test accuracy of the fashion-mnist recipe and its training time.

Target: at least 94.0% test accuracy within 5 minutes of training on a 2-core CPU. Training
time counts the optimisation steps; the wall time printed beside it also counts loading,
per-epoch evaluation and the report.

    python bench/fashion_mnist.py [--set KEY=VALUE ...] [--isa avx2]
"""

from accuracy import main

if __name__ == "__main__":
    main(__doc__, "fashion-mnist", target_acc=0.94, target_s=300.0)
