# The one entrypoint that gathers the decisions of every policy at once:
# data.magtape.main.decisions. The OPA-sidecar engine queries it (one round
# trip per admission request); MagTape's own engine builds its own gathering
# rule per kind instead, and asks each policy on its own when that fails, so
# that a runtime error in one policy cannot hide the others. Both select
# policies by the same rule (docs/policies.md, "Which policies apply"):
#
#   the request's kind is in policy_metadata.targets, and
#   the policy's `matches` is true for the request.
#
# Rego cannot tell a `matches` rule that is undefined for this request from
# one the policy never wrote, so here both mean "does not apply": every
# policy must define `matches`.
package magtape.main

import rego.v1

# decisions[package] is {"metadata": policy_metadata, "deny": deny} for every
# policy package under kubernetes.admission that applies to the request. It
# is keyed by the package's last segment (e.g. "liveness_probe"), which is
# unique, rather than by metadata.name, which two policies could share by
# mistake and which would then make the whole document a conflict.
decisions[pkg] := {
	"metadata": data.kubernetes.admission[pkg].policy_metadata,
	"deny": deny_of(pkg),
} if {
	some pkg
	data.kubernetes.admission[pkg].matches == true
	input.request.kind.kind in data.kubernetes.admission[pkg].policy_metadata.targets
}

# The policy's deny set; empty when it has no deny rule. (Only the policies
# that apply have theirs evaluated.)
deny_of(pkg) := result if {
	result := data.kubernetes.admission[pkg].deny
} else := set()
