# The one entrypoint that gathers the decisions of every policy at once:
# data.magtape.main.decisions. The OPA-sidecar engine queries it (one round
# trip per admission request); the embedded engine instead queries each
# policy's `deny` on its own, so that a runtime error in one policy cannot
# hide the others.
package magtape.main

import rego.v1

# decisions[package] is {"metadata": policy_metadata, "deny": deny} for every
# policy package under kubernetes.admission whose `matches` holds for the
# request. It is keyed by the package's last segment (e.g. "liveness_probe"),
# which is unique, rather than by metadata.name, which two policies could
# share by mistake and which would then make the whole document a conflict.
decisions[pkg] := {
	"metadata": data.kubernetes.admission[pkg].policy_metadata,
	"deny": data.kubernetes.admission[pkg].deny,
} if {
	some pkg
	data.kubernetes.admission[pkg].matches == true
}
