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
# request. Containers are gathered in a comprehension, never iterated in a
# rule body: rego-cpp pays there for the size of each container
# (docs/policies.md, "Keeping a policy cheap").
shortfalls := [[object.get(container, "name", ""), missing] |
	some container in workloads.containers
	not complete(container.resources.requests)
	requests := object.get(container, ["resources", "requests"], {})
	missing := [label | some [label, resource] in resources; not workloads.present(requests, resource)]
]

# Both set: the common case, answered first and without going through
# `resources`.
complete(requests) if {
	requests.cpu != null
	requests.memory != null
}

deny contains info if {
	matches
	some [name, missing] in shortfalls
	text := concat("", ["Resource requests missing (", concat("/", missing), ") for container ", messages.quoted(name)])
	info := messages.failure("resource-requests", "LOW", "MT1004", text, {"container": name, "missing": missing})
}
