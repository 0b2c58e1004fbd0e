# MT3010 pss-seccomp-baseline: Pod Security Standards, baseline - seccomp is
# not switched off. Before v1.19 the annotations
# seccomp.security.alpha.kubernetes.io/pod and
# container.seccomp.security.alpha.kubernetes.io/<container> must name
# runtime/default, docker/default or localhost/<profile>; from v1.19 the
# securityContext.seccompProfile.type fields must not be Unconfined. Under
# restricted from v1.19 MT3017 pss-seccomp-restricted replaces it (as PSA
# overrides this check there). See README.md in this folder.
package kubernetes.admission.pss_seccomp_baseline

import rego.v1

policy_metadata := {
	"name": "pss-seccomp-baseline",
	"severity": "HIGH",
	"errcode": "MT3010",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
	not replaced_by_restricted
}

replaced_by_restricted if {
	data.magtape.lib.pod_security.restricted_applies
	data.magtape.lib.pod_security.version >= 19
}

allowed_types := {"RuntimeDefault", "Localhost"}

pod_annotation := "seccomp.security.alpha.kubernetes.io/pod"

container_annotation_prefix := "container.seccomp.security.alpha.kubernetes.io/"

valid_annotation(v) if v == "runtime/default"

valid_annotation(v) if v == "docker/default"

valid_annotation(v) if {
	is_string(v)
	startswith(v, "localhost/")
}

annotation_text := "runtime/default, docker/default or localhost/<profile> in the seccomp annotations"

field_text := "securityContext.seccompProfile.type RuntimeDefault or Localhost or unset"

# --- v1.0 - v1.18: annotations ---

deny contains info if {
	matches
	data.magtape.lib.pod_security.version < 19
	# (object.get, not annotations[key]: regorus' compiled mode takes
	# `not valid_annotation(x)` as true for an undefined x.)
	value := object.get(data.magtape.lib.pod_security.annotations, pod_annotation, null)
	value != null
	not valid_annotation(value)
	info := data.magtape.lib.pod_security.failure(
		"pss-seccomp-baseline", "MT3010", "baseline", "pod",
		concat("", ["has annotation ", pod_annotation, "=", data.magtape.lib.pod_security.quoted(value)]),
		annotation_text,
		{"field": concat("", [data.magtape.lib.pod_security.metadata_path, ".annotations[", pod_annotation, "]"])},
	)
}

bad_container_annotations := [[c, key, value] |
	some c in data.magtape.lib.pod_security.containers
	key := concat("", [container_annotation_prefix, c.name])
	value := object.get(data.magtape.lib.pod_security.annotations, key, null)
	value != null
	not valid_annotation(value)
]

deny contains info if {
	matches
	data.magtape.lib.pod_security.version < 19
	some [c, key, value] in bad_container_annotations
	info := data.magtape.lib.pod_security.failure(
		"pss-seccomp-baseline", "MT3010", "baseline",
		concat("", ["container ", data.magtape.lib.pod_security.quoted(c.name)]),
		concat("", ["has annotation ", data.magtape.lib.pod_security.text(key), "=", data.magtape.lib.pod_security.quoted(value)]),
		annotation_text,
		{"container": c.name, "image": c.image, "field": concat("", [data.magtape.lib.pod_security.metadata_path, ".annotations[", key, "]"])},
	)
}

# --- v1.19+: fields ---

bad_type(profile) if {
	is_object(profile)
	not object.get(profile, "type", "") in allowed_types
}

deny contains info if {
	matches
	data.magtape.lib.pod_security.version >= 19
	profile := data.magtape.lib.pod_security.pod_security_context.seccompProfile
	bad_type(profile)
	info := data.magtape.lib.pod_security.pod_failure(
		"pss-seccomp-baseline", "MT3010", "baseline", "securityContext.seccompProfile.type",
		concat("", ["securityContext.seccompProfile.type=", data.magtape.lib.pod_security.text(object.get(profile, "type", ""))]),
		field_text,
	)
}

bad_containers := [c |
	some c in data.magtape.lib.pod_security.containers
	bad_type(object.get(c.sc, "seccompProfile", null))
]

deny contains info if {
	matches
	data.magtape.lib.pod_security.version >= 19
	some c in bad_containers
	info := data.magtape.lib.pod_security.container_failure(
		"pss-seccomp-baseline", "MT3010", "baseline", c, "securityContext.seccompProfile.type",
		concat("", ["sets securityContext.seccompProfile.type=", data.magtape.lib.pod_security.text(object.get(c.sc.seccompProfile, "type", ""))]),
		field_text,
	)
}
