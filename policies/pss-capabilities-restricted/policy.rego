# MT3018 pss-capabilities-restricted: Pod Security Standards, restricted,
# v1.22+ - every container drops ALL capabilities and adds back at most
# NET_BIND_SERVICE. Windows pods (spec.os.name: windows) are exempt from
# v1.25. Replaces MT3004 pss-capabilities-baseline under restricted (as PSA
# overrides it). See README.md in this folder.
package kubernetes.admission.pss_capabilities_restricted

import rego.v1

policy_metadata := {
	"name": "pss-capabilities-restricted",
	"severity": "HIGH",
	"errcode": "MT3018",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.restricted_applies
	data.magtape.lib.pod_security.version >= 22
	not data.magtape.lib.pod_security.windows_exempt
}

# [container, what it does wrong].
unrestricted := [[c, problems] |
	some c in data.magtape.lib.pod_security.containers
	caps := object.get(c.sc, "capabilities", {})
	added := [data.magtape.lib.pod_security.quoted(cap) |
		some cap in data.magtape.lib.workloads.list(caps, "add")
		cap != "NET_BIND_SERVICE"
	]
	problems := array.concat(drop_problem(caps), add_problem(added))
	count(problems) > 0
]

# (A membership test, not a loop: regorus' compiled mode skips the `else`
# of a function whose first body iterates and fails.)
drop_problem(caps) := [] if {
	"ALL" in data.magtape.lib.workloads.list(caps, "drop")
} else := ["does not drop ALL in securityContext.capabilities.drop"]

add_problem(added) := [] if {
	count(added) == 0
} else := [concat("", ["adds ", concat(", ", added), " in securityContext.capabilities.add"])]

deny contains info if {
	matches
	some [c, problems] in unrestricted
	info := data.magtape.lib.pod_security.container_failure(
		"pss-capabilities-restricted", "MT3018", "restricted", c, "securityContext.capabilities",
		concat(" and ", problems), "capabilities.drop [\"ALL\"] and capabilities.add at most [\"NET_BIND_SERVICE\"]",
	)
}
