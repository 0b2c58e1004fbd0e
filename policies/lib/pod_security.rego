# Which Pod Security Standards level and version apply to the request under
# review, and the per-request facts every PSS check (policies/pss-*, MT3001-
# MT3099) reads: the pod's containers with their security contexts, where the
# pod spec sits in this kind, and the shape of a PSS failure. One module
# decides this so that all the controls agree on the level, the version and
# the containers (docs/pod-security.md).
#
# The setting, first found wins:
#   1. data.magtape.pod_security.override  {"level": ..., "version": ...}
#      (`magtape check --pod-security LEVEL[:VERSION]`: every object);
#   2. the namespace's labels k8s.t-mobile.com/pod-security (level) and
#      k8s.t-mobile.com/pod-security-version, read from
#      data.kubernetes.namespaces[<ns>].metadata.labels (kube-mgmt layout);
#   3. data.magtape.pod_security.default  (the cluster-wide setting).
# Level "privileged", "off" or none: no PSS check applies. Version "latest", none, or
# one newer than `latest_minor`: the newest rules. A level that is not one of
# the three is read as "restricted" (as Pod Security Admission does: a typo
# must not switch the checks off); a malformed version as "latest". Both are
# listed in `problems`.
#
# Every rule about the request is evaluated once per request and shared by
# all PSS checks; nothing here is evaluated for a request no PSS level covers
# beyond `level` itself.
package magtape.lib.pod_security

import rego.v1

# The newest policy version whose rules differ from the previous one
# (v1.37: two more safe sysctls). Versions after it behave like it.
latest_minor := 37

level_label := "k8s.t-mobile.com/pod-security"

version_label := "k8s.t-mobile.com/pod-security-version"

known_levels := {"privileged", "baseline", "restricted"}

# The labels of the request's namespace, {} when the namespace is unknown.
namespace_labels := labels if {
	labels := data.kubernetes.namespaces[data.magtape.lib.request.namespace].metadata.labels
	is_object(labels)
} else := {}

override := data.magtape.pod_security.override if is_object(data.magtape.pod_security.override)

cluster_default := data.magtape.pod_security.default if is_object(data.magtape.pod_security.default)

# Where the level comes from: "override", "namespace", "default" or "none".
source := "override" if {
	override
} else := "namespace" if {
	is_string(namespace_labels[level_label])
} else := "default" if {
	cluster_default
} else := "none"

raw_level := object.get(override, "level", "") if {
	source == "override"
} else := namespace_labels[level_label] if {
	source == "namespace"
} else := object.get(cluster_default, "level", "") if {
	source == "default"
} else := ""

# The version follows the level's source; a namespace that sets only the
# level takes the cluster default's version (as PSA's defaults do).
raw_version := object.get(override, "version", "latest") if {
	source == "override"
} else := namespace_labels[version_label] if {
	is_string(namespace_labels[version_label])
} else := object.get(cluster_default, "version", "latest") if {
	cluster_default
} else := "latest"

# "privileged", "baseline" or "restricted".
level := "privileged" if {
	raw_level == ""
} else := l if {
	is_string(raw_level)
	l := lower(trim_space(raw_level))
	l in known_levels
} else := "privileged" if {
	is_string(raw_level)
	lower(trim_space(raw_level)) in {"", "off"}
} else := "restricted"

# The version's minor number (v1.N -> N), capped at latest_minor.
version := latest_minor if {
	not parsed_minor
} else := latest_minor if {
	parsed_minor > latest_minor
} else := parsed_minor

# (Six digits at most, and no leading zero: to_number reads them alike in
# every engine.)
parsed_minor := to_number(trim_prefix(v, "v1.")) if {
	is_string(raw_version)
	v := trim_space(raw_version)
	startswith(v, "v1.") # ("latest", the common case, without the regular expression)
	regex.match(`^v1\.(0|[1-9][0-9]{0,5})$`, v)
}

version_text := concat("", ["v1.", format_int(version, 10)])

# What was wrong with the setting, for tools and custom policies (MagTape's
# audit reads the labels the same way: app/magtape/podsecurity.py).
problems contains msg if {
	not level_is_known
	msg := concat("", ["unknown Pod Security level ", quoted(raw_level), " (from the ", source, "): read as restricted; use privileged, baseline or restricted"])
}

problems contains msg if {
	not version_is_known
	msg := concat("", ["malformed Pod Security version ", quoted(raw_version), ": read as latest; use latest or v1.N"])
}

level_is_known if raw_level == ""

level_is_known if {
	is_string(raw_level)
	lower(trim_space(raw_level)) in (known_levels | {"", "off"})
}

version_is_known if parsed_minor

version_is_known if {
	is_string(raw_version)
	lower(trim_space(raw_version)) in {"", "latest"}
}

# The baseline controls apply (level baseline or restricted).
baseline_applies if level == "baseline"

baseline_applies if level == "restricted"

restricted_applies if level == "restricted"

# since(n): the version in force is v1.n or newer; before(n): older. For
# custom policies: the built-in controls compare `version` directly, which
# costs the compiled mode less than a function call per control.
since(n) if version >= n

before(n) if version < n

# --- the pod -----------------------------------------------------------

pod_spec := data.magtape.lib.workloads.pod_spec

kind := data.magtape.lib.workloads.kind

# Where this kind keeps the pod spec, for field paths in messages.
spec_path := "spec.template.spec" if {
	kind in data.magtape.lib.workloads.template_kind_list
} else := "spec.jobTemplate.spec.template.spec" if {
	kind == "CronJob"
} else := "spec"

# The pod's metadata (a template's for the workload kinds).
pod_metadata := input.request.object.metadata if {
	kind == "Pod"
} else := input.request.object.spec.template.metadata if {
	kind in data.magtape.lib.workloads.template_kind_list
} else := input.request.object.spec.jobTemplate.spec.template.metadata if {
	kind == "CronJob"
}

metadata_path := "metadata" if {
	kind == "Pod"
} else := "spec.template.metadata" if {
	kind in data.magtape.lib.workloads.template_kind_list
} else := "spec.jobTemplate.spec.template.metadata"

# The pod's annotations ({} when none). A null value (`key:` with nothing
# after it in YAML) reads as "", as the API server stores it, so that a
# manifest checked offline draws the failures its admitted object would.
annotations := {key: value |
	some key, raw in pod_metadata.annotations
	value := empty_if_null(raw)
} if {
	is_object(pod_metadata.annotations)
} else := {}

empty_if_null(x) := "" if {
	x == null
} else := x

# The pod-level security context ({} when none).
pod_security_context := pod_spec.securityContext if {
	is_object(pod_spec.securityContext)
} else := {}

# A Windows pod (spec.os.name), relaxed by some restricted controls since v1.25.
windows if pod_spec.os.name == "windows"

# A pod in a user namespace (spec.hostUsers: false), relaxed since v1.35.
user_namespace if pod_spec.hostUsers == false

# The restricted controls that Windows pods are exempt from (capabilities,
# privilege escalation, seccomp) ask this, evaluated once per request.
windows_exempt if {
	version >= 25
	windows
}

# The restricted controls that pods in a user namespace are exempt from
# (runAsNonRoot, runAsUser) ask this.
user_namespace_exempt if {
	version >= 35
	user_namespace
}

# Every container of the pod (init, app and ephemeral, in that order, as
# PSA visits them), gathered once per request with only what the controls
# read: name, image, its security context, and what a failure about it says
# (the message's subject and the prefix of its field paths, built here once
# rather than for every failure).
containers := [c |
	some list_name in ["initContainers", "containers", "ephemeralContainers"]
	some i, container in list_of(pod_spec, list_name)
	is_object(container)
	name := object.get(container, "name", "")
	c := {
		"name": str(name),
		"image": str(object.get(container, "image", "")),
		"field": concat("", [spec_path, ".", list_name, "[", format_int(i, 10), "]."]),
		"subject": concat("", ["container ", quoted(name)]),
		"sc": security_context_of(container),
		"container": container,
	}
]

# This module calls no function of another library module: OPA compiles
# each module as it arrives (kube-mgmt pushes a ConfigMap's keys in no set
# order), and a call to a function not yet loaded is an error there. Rules
# of other modules (data.magtape.lib.workloads.pod_spec) are fine.

# list_of(obj, key): obj[key] when it is an array, else [].
list_of(obj, key) := obj[key] if {
	is_array(obj[key])
} else := []

# str(x): x as text; integers below 10^15 in digits, other numbers as
# "(a number)" (the engines print them differently), anything else as JSON.
str(x) := x if {
	is_string(x)
} else := format_int(x, 10) if {
	is_number(x)
	abs(x) < 1000000000000000
	x == floor(x)
} else := "(a number)" if {
	is_number(x)
} else := json.marshal(x)

security_context_of(container) := container.securityContext if {
	is_object(container.securityContext)
} else := {}

# The image of the container named `name` ("" when there is none).
image_of(name) := images[0] if {
	images := [c.image | some c in containers; c.name == name]
	count(images) > 0
} else := ""

# --- failures ----------------------------------------------------------

# text(x): a value for a message, on one line and at most 120 characters:
# control characters and line separators (U+0085, U+2028, U+2029) become
# spaces (a message is one line, and never needs an escape to be read).
# (Most values need nothing: JSON writes them without an escape and they
# hold none of the separators, which is cheaper to ask than the regular
# expression. Both paths give the same text in every engine.)
text(x) := shorten(s) if {
	s := str(x)
	json.marshal(s) == concat("", ["\"", s, "\""])
	not contains(s, "\u007f")
	not contains(s, "\u0085")
	not contains(s, "\u2028")
	not contains(s, "\u2029")
} else := shorten(regex.replace(str(x), `[\x00-\x1f\x7f\x{85}\x{2028}\x{2029}]`, " "))

shorten(s) := concat("", [substring(s, 0, 117), "..."]) if {
	count(s) > 120
} else := s

quoted(x) := concat("", ["\"", text(x), "\""])

# failure(name, errcode, control_level, subject, problem, allowed, details):
# one element of a PSS check's `deny`, all HIGH (docs/pod-security.md,
# "Severity"):
#   [FAIL] HIGH - <subject> <problem>; <control_level> requires <allowed> (<errcode>)
# details get "level" (the control's level) and "version" (the one in force).
failure(name, errcode, control_level, subject, problem, allowed, details) := {
	"name": name,
	"severity": "HIGH",
	"errcode": errcode,
	"msg": message(errcode, control_level, subject, problem, allowed),
	"details": object.union(details, {"level": control_level, "version": version_text}),
}

message(errcode, control_level, subject, problem, allowed) := concat("", [
	"[FAIL] HIGH - ", subject, " ", problem, "; ", control_level, " requires ", allowed,
	" (", errcode, ")",
])

# A failure about container c's field (a path below the container).
# (failure's shape and message(), built directly: no object.union and no
# function call per failure, the costly part of a failing control.)
container_failure(name, errcode, control_level, c, field, problem, allowed) := {
	"name": name,
	"severity": "HIGH",
	"errcode": errcode,
	"msg": concat("", [
		"[FAIL] HIGH - ", c.subject, " ", problem, "; ", control_level, " requires ", allowed,
		" (", errcode, ")",
	]),
	"details": {
		"container": c.name, "image": c.image, "field": concat("", [c.field, field]),
		"level": control_level, "version": version_text,
	},
}

# A failure about a pod-level field (`field`, a path below the pod spec);
# `setting` is what the pod sets, below the pod spec too
# ("securityContext.runAsUser=0"): the message names it in full
# ("pod sets spec.template.spec.securityContext.runAsUser=0").
pod_failure(name, errcode, control_level, field, setting, allowed) := failure(
	name, errcode, control_level, "pod", concat("", ["sets ", spec_path, ".", setting]), allowed,
	{"field": concat("", [spec_path, ".", field])},
)
