# MT3013 pss-volume-types: Pod Security Standards, restricted, v1.0+ - only
# the volume types a restricted pod may use inline: configMap, csi,
# downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected
# and secret. Reports hostPath volumes too (PSA's restricted check overrides
# the baseline hostPath one). See README.md in this folder.
package kubernetes.admission.pss_volume_types

import rego.v1

policy_metadata := {
	"name": "pss-volume-types",
	"severity": "HIGH",
	"errcode": "MT3013",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.restricted_applies
}

allowed := [
	"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
	"persistentVolumeClaim", "projected", "secret",
]

allowed_volume(volume) if {
	some t in allowed
	data.magtape.lib.workloads.present(volume, t)
}

# [index, name, its types] of each volume of no allowed type. A volume that sets
# no source at all is an emptyDir: the API server defaults it so before any
# admission webhook sees it, and a manifest checked offline means the same.
restricted := [[i, name, types] |
	some i, volume in data.magtape.lib.workloads.volumes
	is_object(volume)
	not allowed_volume(volume)
	name := data.magtape.lib.messages.str(object.get(volume, "name", ""))
	types := [data.magtape.lib.pod_security.text(k) | some k, v in volume; k != "name"; v != null]
	count(types) > 0
]

deny contains info if {
	matches
	some [i, name, types] in restricted
	info := data.magtape.lib.pod_security.failure(
		"pss-volume-types", "MT3013", "restricted",
		concat("", ["volume ", data.magtape.lib.pod_security.quoted(name)]),
		concat("", ["uses volume type ", concat(", ", sort(types))]),
		concat("", ["one of ", concat(", ", allowed)]),
		{"volume": name, "field": concat("", [data.magtape.lib.pod_security.spec_path, ".volumes[", format_int(i, 10), "]"])},
	)
}
