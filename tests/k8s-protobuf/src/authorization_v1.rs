//! Schemas for the `authorization.k8s.io/v1` reviews kubectl sends as protobuf:
//! SelfSubjectAccessReview (`kubectl auth can-i VERB RESOURCE|/PATH`) and SelfSubjectRulesReview
//! (`kubectl auth can-i --list`). Field numbers from `k8s.io/api/authorization/v1/generated.proto`.

use crate::meta_v1::{FIELD_SELECTOR_REQUIREMENT, LABEL_SELECTOR_REQUIREMENT, OBJECT_META};

msg! {
    pub(crate) SELF_SUBJECT_ACCESS_REVIEW = "SelfSubjectAccessReview" {
        1 "metadata" Msg(&OBJECT_META) Omit,
        2 "spec" Msg(&SELF_SUBJECT_ACCESS_REVIEW_SPEC) Always,
        3 "status" Msg(&SUBJECT_ACCESS_REVIEW_STATUS) Omit,
    }

    SELF_SUBJECT_ACCESS_REVIEW_SPEC = "SelfSubjectAccessReviewSpec" {
        1 "resourceAttributes" Msg(&RESOURCE_ATTRIBUTES) Ptr,
        2 "nonResourceAttributes" Msg(&NON_RESOURCE_ATTRIBUTES) Ptr,
    }

    RESOURCE_ATTRIBUTES = "ResourceAttributes" {
        1 "namespace" Str Omit,
        2 "verb" Str Omit,
        3 "group" Str Omit,
        4 "version" Str Omit,
        5 "resource" Str Omit,
        6 "subresource" Str Omit,
        7 "name" Str Omit,
        8 "fieldSelector" Msg(&FIELD_SELECTOR_ATTRIBUTES) Ptr,
        9 "labelSelector" Msg(&LABEL_SELECTOR_ATTRIBUTES) Ptr,
    }

    FIELD_SELECTOR_ATTRIBUTES = "FieldSelectorAttributes" {
        1 "rawSelector" Str Omit,
        2 "requirements" Msg(&FIELD_SELECTOR_REQUIREMENT) Rep,
    }

    LABEL_SELECTOR_ATTRIBUTES = "LabelSelectorAttributes" {
        1 "rawSelector" Str Omit,
        2 "requirements" Msg(&LABEL_SELECTOR_REQUIREMENT) Rep,
    }

    NON_RESOURCE_ATTRIBUTES = "NonResourceAttributes" {
        1 "path" Str Omit,
        2 "verb" Str Omit,
    }

    /// `SubjectAccessReviewStatus`: `allowed` has no `omitempty`.
    SUBJECT_ACCESS_REVIEW_STATUS = "SubjectAccessReviewStatus" {
        1 "allowed" Bool Always,
        4 "denied" Bool Omit,
        2 "reason" Str Omit,
        3 "evaluationError" Str Omit,
    }

    pub(crate) SELF_SUBJECT_RULES_REVIEW = "SelfSubjectRulesReview" {
        1 "metadata" Msg(&OBJECT_META) Omit,
        2 "spec" Msg(&SELF_SUBJECT_RULES_REVIEW_SPEC) Always,
        3 "status" Msg(&SUBJECT_RULES_REVIEW_STATUS) Omit,
    }

    SELF_SUBJECT_RULES_REVIEW_SPEC = "SelfSubjectRulesReviewSpec" {
        1 "namespace" Str Omit,
    }

    /// `SubjectRulesReviewStatus`: the rule lists and `incomplete` have no `omitempty`.
    SUBJECT_RULES_REVIEW_STATUS = "SubjectRulesReviewStatus" {
        1 "resourceRules" Msg(&RESOURCE_RULE) RepNull,
        2 "nonResourceRules" Msg(&NON_RESOURCE_RULE) RepNull,
        3 "incomplete" Bool Always,
        4 "evaluationError" Str Omit,
    }

    RESOURCE_RULE = "ResourceRule" {
        1 "verbs" Str RepNull,
        2 "apiGroups" Str Rep,
        3 "resources" Str Rep,
        4 "resourceNames" Str Rep,
    }

    NON_RESOURCE_RULE = "NonResourceRule" {
        1 "verbs" Str RepNull,
        2 "nonResourceURLs" Str Rep,
    }
}
