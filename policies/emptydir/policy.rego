# MT1009 emptydir: every emptyDir volume has a sizeLimit of at most 100M
# (100,000,000 bytes), so one pod cannot fill its node's disk.
# See README.md in this folder.
package kubernetes.admission.emptydir

import rego.v1

policy_metadata := {
	"name": "emptydir",
	"severity": "MED",
	"errcode": "MT1009",
	"targets": data.magtape.lib.workloads.kinds,
}

# data.magtape.lib.workloads.is_workload tests exactly policy_metadata.targets, once per
# request for every pod check.
matches if data.magtape.lib.workloads.is_workload

# "100 Megabytes": decimal, as Kubernetes writes 100M. 64Mi (67,108,864) and
# 100M pass; 100Mi (104,857,600) and 1Gi do not.
max_bytes := 100000000

# [name, sizeLimit or null] of each emptyDir volume. Volumes are gathered in
# a comprehension, keeping only what the messages need (docs/policies.md,
# "Rules of thumb").
empty_dirs := [[object.get(volume, "name", ""), object.get(volume.emptyDir, "sizeLimit", null)] |
	some volume in data.magtape.lib.workloads.volumes
	is_object(volume.emptyDir)
]

# No sizeLimit, or one that is not a quantity (only possible offline: the API
# server rejects it before admission).
deny contains info if {
	matches
	some [name, size_limit] in empty_dirs
	not data.magtape.lib.quantity.value(size_limit)
	text := concat("", ["Size limit of emptyDir volume ", data.magtape.lib.messages.quoted(name), " is not set"])
	info := data.magtape.lib.messages.failure("emptydir", "MED", "MT1009", text, {"volume": name})
}

deny contains info if {
	matches
	some [name, size_limit] in empty_dirs
	size := data.magtape.lib.quantity.value(size_limit)
	size > max_bytes
	text := concat("", ["Size limit of emptyDir volume ", data.magtape.lib.messages.quoted(name), " is greater than 100 Megabytes"])
	info := data.magtape.lib.messages.failure("emptydir", "MED", "MT1009", text, {"volume": name, "sizeLimit": size_limit})
}
