# MT1003 resource-limits: every container sets CPU and memory limits.
# See README.md in this folder.
package kubernetes.admission.resource_limits

import rego.v1

policy_metadata := {
	"name": "resource-limits",
	"severity": "LOW",
	"errcode": "MT1003",
	"targets": data.magtape.lib.workloads.kinds,
}

# data.magtape.lib.workloads.is_workload tests exactly policy_metadata.targets, once per
# request for every pod check.
matches if data.magtape.lib.workloads.is_workload

# Message label -> resource name, in the order the message lists them.
resources := [["CPU", "cpu"], ["MEM", "memory"]]

# [name, missing labels] of each container that lacks a CPU or memory
# limit. Entries that are not objects are not containers and are skipped.
# Each limit is read with one object.get down the path (a missing or
# non-object resources or resources.limits has nothing set):
# `not complete(container.resources.limits)` is undefined in OPA when the
# field is absent (docs/policies.md, "Writing engine-neutral Rego").
shortfalls := [[object.get(container, "name", ""), missing] |
	some container in data.magtape.lib.workloads.containers
	is_object(container)
	missing := [label |
		some [label, resource] in resources
		object.get(container, ["resources", "limits", resource], null) == null
	]
	count(missing) > 0
]

deny contains info if {
	matches
	some [name, missing] in shortfalls

	# Built inline rather than with data.magtape.lib.messages.failure: this runs once per failing
	# container, and helper calls dominate its cost (docs/performance.md).
	info := {
		"name": "resource-limits", "severity": "LOW", "errcode": "MT1003",
		"msg": concat("", ["[FAIL] LOW - Resource limits missing (", concat("/", missing), ") for container \"", data.magtape.lib.messages.str(name), "\" (MT1003)"]),
		"details": {"container": name, "missing": missing},
	}
}
