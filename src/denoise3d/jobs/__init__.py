"""The jobs behind the CLI: one skeleton (:mod:`~denoise3d.jobs.skeleton`), one module per task
(:mod:`~denoise3d.jobs.pretrain`, :mod:`~denoise3d.jobs.property`,
:mod:`~denoise3d.jobs.energy_force`, :mod:`~denoise3d.jobs.evaluate`; ``finetune.task`` picks one
in :mod:`~denoise3d.jobs.finetune`), the output-folder lock (:mod:`~denoise3d.jobs.lock`) and the
one owner of the model checkpoint format (:mod:`~denoise3d.jobs.checkpoint`).

Entry points: ``jobs.pretrain.pretrain(cfg)``, ``jobs.finetune.finetune(cfg)``,
``jobs.evaluate.evaluate(path, split, overrides)``.
"""
