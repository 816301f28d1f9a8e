"""Training a network: the loop (``train``), what a run saves and resumes from (``state``,
``runs``), the schedules and the update rule (``schedules``), the learning-rate range test
(``lr_find``), starting from trained weights (``finetune``), the validation pass
(``evaluate``), and what a run tells (``logger``, ``report``)."""
