"""The distillation methods, one module per method family (formulas: docs/methods.md).

=============  ============================================================
``ce.py``      CE, the no-distillation baseline
``kd.py``      KD (Hinton, KL form); ``kd_term`` is shared with SLKD
``dkd.py``     DKD (decoupled KD)
``nkd.py``     NKD and teacher-free tf-NKD
``la.py``      LA (logits adjustment, then KD)
``dtd.py``     DTD (dynamic temperature distillation)
``ats.py``     ATS (asymmetric temperature scaling); ``asymmetric_kd`` is shared with ISATS
``isats.py``   ISATS (instance-specific ATS)
``fgcr.py``    FGCR (fusing global class relations)
``slkd.py``    SLKD (self-learning teachers)
``regt.py``    RegT, the teacher-training regulariser (not registered)
=============  ============================================================

Each module registers its losses with :func:`kdcache.losses.register` when
imported; :mod:`kdcache.losses` imports them in the order of docs/methods.md,
which is the order of :func:`kdcache.losses.names`. Import the functions from
:mod:`kdcache.losses`, not from here.

Every registered function has the signature

    fn(student_logits, teacher_logits, labels, **hparams_and_call_inputs) -> dict[str, Tensor]

and returns 0-dim tensors: ``"loss"`` is the TOTAL student objective of the
method's section, CE included with the section's weight; the other keys are
its named terms. Convention for the terms (so they mean the same thing in
every method): ``"ce"`` is always the plain, unweighted ``CE(s, y)`` of the
student; method terms include the temperature factors that are part of their
definition (``T²``, ``τs²``) but none of the loss weights (``w_ce``, ``w_kd``,
α, β, γ, λ, a, b, P, the warm-up factor). Each docstring gives ``loss`` as a
combination of the terms. Entries that are diagnostics rather than terms say
so and carry no gradient.

The bodies receive validated inputs (see ``register``): student logits in the
maths dtype with their graph, teacher logits detached in the same dtype
(``None`` for teacher-free methods), int64 labels, and resolved
hyper-parameters.
"""
