# MT1010 host-path: no volume mounts a path of the node's filesystem.
# See README.md in this folder.
package kubernetes.admission.host_path

import rego.v1

import data.magtape.lib.messages
import data.magtape.lib.workloads

policy_metadata := {
	"name": "host-path",
	"severity": "MED",
	"errcode": "MT1010",
	"targets": workloads.kinds,
}

# workloads.is_workload tests exactly policy_metadata.targets, once per
# request for every pod check.
matches if workloads.is_workload

deny contains info if {
	matches
	some volume in workloads.volumes
	workloads.present(volume, "hostPath")
	name := object.get(volume, "name", "")
	text := concat("", ["hostPath is configured for volume ", messages.quoted(name)])
	info := messages.failure("host-path", "MED", "MT1010", text, {"volume": name, "path": object.get(volume.hostPath, "path", "")})
}
