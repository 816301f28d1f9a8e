"""Using a trained network: loading it from any file it comes in (``trained``,
``safetensors_file``), making it ready to answer (``prepared``), the paper's test views
(``crops``), error over a data set (``eval_checkpoints``), answers for image files
(``predict``), the paper's figures (``figure_data``, ``figures``), export to other runtimes
(``export``) and the LRN divisor it meets (``lrn_divisor``).

``from alexnet.inference.prepared import infer, prepare_for_inference`` keeps working: before this
package, ``alexnet.inference`` was the module now named ``prepared``.
"""

from alexnet.inference.prepared import infer, prepare_for_inference

__all__ = ["infer", "prepare_for_inference"]
