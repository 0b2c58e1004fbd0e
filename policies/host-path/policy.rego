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

matches if input.request.kind.kind in policy_metadata.targets

deny contains info if {
	matches
	some volume in workloads.volumes
	workloads.present(volume, "hostPath")
	name := object.get(volume, "name", "")
	text := concat("", ["hostPath is configured for volume ", messages.quoted(name)])
	info := messages.violation_with_details(policy_metadata, text, {"volume": name, "path": object.get(volume.hostPath, "path", "")})
}
