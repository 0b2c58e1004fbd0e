# MT1010 host-path: no volume mounts a path of the node's filesystem.
# See README.md in this folder.
package kubernetes.admission.host_path

import rego.v1

policy_metadata := {
	"name": "host-path",
	"severity": "MED",
	"errcode": "MT1010",
	"targets": data.magtape.lib.workloads.kinds,
}

# data.magtape.lib.workloads.is_workload tests exactly policy_metadata.targets, once per
# request for every pod check.
matches if data.magtape.lib.workloads.is_workload

# [name, hostPath] of each hostPath volume. Volumes are gathered in a
# comprehension, keeping only what the messages need (docs/policies.md,
# "Rules of thumb").
host_paths := [[object.get(volume, "name", ""), volume.hostPath] |
	some volume in data.magtape.lib.workloads.volumes
	data.magtape.lib.workloads.present(volume, "hostPath")
]

deny contains info if {
	matches

	# Under a Pod Security Standards level MT3005/MT3013 reports this field instead
	# (docs/pod-security.md, "Overlaps"): one failure per field, never two.
	not data.magtape.lib.pod_security.baseline_applies
	some [name, host_path] in host_paths
	text := concat("", ["hostPath is configured for volume ", data.magtape.lib.messages.quoted(name)])
	info := data.magtape.lib.messages.failure("host-path", "MED", "MT1010", text, {"volume": name, "path": data.magtape.lib.workloads.get(host_path, "path", "")})
}
