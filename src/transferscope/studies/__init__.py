"""Studies: one module per kind, each ``run(spec, out)`` with a typed spec.

* :mod:`.spec` - the study file (TOML) schema, :class:`StudySpec`;
* :mod:`.run` - build the context, train what is missing, run the registered analyses;
* :mod:`.memory` - the source-domain memory audit (papers 000/001);
* :mod:`.what_transferred` - P-T vs RI-T (papers 003/004);
* :mod:`.transferability` - layer-wise transferability over target sets (paper 002);
* :mod:`.training_runs` - block shuffling and pre-training checkpoints (paper 003);
* :mod:`.remedies` - remedies for lingering memories vs standard fine-tuning.
"""

__all__ = []
