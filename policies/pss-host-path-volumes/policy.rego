# MT3005 pss-host-path-volumes: Pod Security Standards, baseline, v1.0+ - no
# hostPath volume. Under restricted MT3013 pss-volume-types reports hostPath
# volumes instead (as PSA overrides this check there); in a namespace under a
# PSS level this check reports what MT1010 host-path reports elsewhere
# (docs/pod-security.md). See README.md in this folder.
package kubernetes.admission.pss_host_path_volumes

import rego.v1

policy_metadata := {
	"name": "pss-host-path-volumes",
	"severity": "HIGH",
	"errcode": "MT3005",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
	not data.magtape.lib.pod_security.restricted_applies
}

# [index, name] of each hostPath volume.
host_paths := [[i, data.magtape.lib.messages.str(object.get(volume, "name", ""))] |
	some i, volume in data.magtape.lib.workloads.volumes
	data.magtape.lib.workloads.present(volume, "hostPath")
]

deny contains info if {
	matches
	some [i, name] in host_paths
	info := data.magtape.lib.pod_security.failure(
		"pss-host-path-volumes", "MT3005", "baseline",
		concat("", ["volume ", data.magtape.lib.pod_security.quoted(name)]),
		"uses hostPath", "no hostPath volume",
		{"volume": name, "field": concat("", [data.magtape.lib.pod_security.spec_path, ".volumes[", format_int(i, 10), "].hostPath"])},
	)
}
