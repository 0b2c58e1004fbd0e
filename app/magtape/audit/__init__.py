"""Background audit: what already runs in the cluster, judged as admission would judge it now.

MagTape's webhook only sees what is created or updated after it is
installed. The audit watches the kinds the policies target, decides every
object with the webhook's own Enforcer (deny level, exceptions, overrides)
on capacity of its own, and keeps one ``PolicyReport`` per namespace and a
few metrics current (docs/audit.md). ``magtape audit`` runs the same
evaluation once, from a workstation.

Modules: :mod:`~magtape.audit.results` (one object's findings),
:mod:`~magtape.audit.report` (a namespace's bounded report),
:mod:`~magtape.audit.tally` (bounded metric samples),
:mod:`~magtape.audit.kinds` (what is audited), :mod:`~magtape.audit.writer`
(storing reports), :mod:`~magtape.audit.lease` (one writer among replicas),
:mod:`~magtape.audit.capacity` (the audit's own engine workers),
:mod:`~magtape.audit.controller` (watch, queue, rate limit, passes),
:mod:`~magtape.audit.service` (wiring into ``magtape serve``) and
:mod:`~magtape.audit.command` (``magtape audit``).
"""
