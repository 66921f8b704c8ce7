"""Intent tagging: normalisation, the rules of ``intent.yaml`` and the rule classifier.

:func:`~scrm.intent.normalize.normalize` → :class:`~scrm.intent.classifier.Classifier` (built from
:class:`~scrm.intent.rules.IntentRules`, kept per process by :class:`~scrm.intent.services.IntentServices`).
"""
