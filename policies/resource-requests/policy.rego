# MT1004 resource-requests: every container sets CPU and memory requests.
# See README.md in this folder.
package kubernetes.admission.resource_requests

import rego.v1

import data.magtape.lib.messages
import data.magtape.lib.workloads

policy_metadata := {
	"name": "resource-requests",
	"severity": "LOW",
	"errcode": "MT1004",
	"targets": workloads.kinds,
}

# workloads.is_workload tests exactly policy_metadata.targets, once per
# request for every pod check.
matches if workloads.is_workload

# Message label -> resource name, in the order the message lists them.
resources := [["CPU", "cpu"], ["MEM", "memory"]]

# [name, missing labels] of each container that lacks a CPU or memory
# request. Entries that are not objects are not containers and are skipped.
# Each request is read with one object.get down the path (a missing or
# non-object resources or resources.requests has nothing set):
# `not complete(container.resources.requests)` is undefined in OPA when the
# field is absent (docs/policies.md, "Writing engine-neutral Rego").
shortfalls := [[object.get(container, "name", ""), missing] |
	some container in workloads.containers
	is_object(container)
	missing := [label |
		some [label, resource] in resources
		object.get(container, ["resources", "requests", resource], null) == null
	]
	count(missing) > 0
]

deny contains info if {
	matches
	some [name, missing] in shortfalls

	# Built inline rather than with messages.failure: this runs once per failing
	# container, and helper calls dominate its cost (docs/performance.md).
	info := {
		"name": "resource-requests", "severity": "LOW", "errcode": "MT1004",
		"msg": concat("", ["[FAIL] LOW - Resource requests missing (", concat("/", missing), ") for container \"", messages.str(name), "\" (MT1004)"]),
		"details": {"container": name, "missing": missing},
	}
}
