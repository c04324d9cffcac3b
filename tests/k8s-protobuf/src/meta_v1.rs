//! Schemas for `k8s.io/apimachinery/pkg/apis/meta/v1` (field numbers from its `generated.proto`,
//! JSON names and omission rules from `types.go`).

msg! {
    /// `ObjectMeta`; `creationTimestamp` is `omitempty,omitzero` upstream, so a zero time is left out.
    pub(crate) OBJECT_META = "ObjectMeta" {
        1 "name" Str Omit,
        2 "generateName" Str Omit,
        3 "namespace" Str Omit,
        4 "selfLink" Str Omit,
        5 "uid" Str Omit,
        6 "resourceVersion" Str Omit,
        7 "generation" I64 Omit,
        8 "creationTimestamp" Time OmitZero,
        9 "deletionTimestamp" Time Ptr,
        10 "deletionGracePeriodSeconds" I64 Ptr,
        11 "labels" MapStr Rep,
        12 "annotations" MapStr Rep,
        13 "ownerReferences" Msg(&OWNER_REFERENCE) Rep,
        14 "finalizers" Str Rep,
        17 "managedFields" Msg(&MANAGED_FIELDS_ENTRY) Rep,
    }

    /// `OwnerReference`: apiVersion, kind, name and uid have no `omitempty`.
    pub(crate) OWNER_REFERENCE = "OwnerReference" {
        5 "apiVersion" Str Always,
        1 "kind" Str Always,
        3 "name" Str Always,
        4 "uid" Str Always,
        6 "controller" Bool Ptr,
        7 "blockOwnerDeletion" Bool Ptr,
    }

    /// `ManagedFieldsEntry`; `fieldsV1` is embedded as the raw JSON it carries.
    pub(crate) MANAGED_FIELDS_ENTRY = "ManagedFieldsEntry" {
        1 "manager" Str Omit,
        2 "operation" Str Omit,
        3 "apiVersion" Str Omit,
        4 "time" Time Ptr,
        6 "fieldsType" Str Omit,
        7 "fieldsV1" FieldsV1 Ptr,
        8 "subresource" Str Omit,
    }

    /// `metav1.Condition` (used in `ServiceStatus.conditions`).
    pub(crate) CONDITION = "Condition" {
        1 "type" Str Always,
        2 "status" Str Always,
        3 "observedGeneration" I64 Omit,
        4 "lastTransitionTime" Time Always,
        5 "reason" Str Always,
        6 "message" Str Always,
    }

    /// `DeleteOptions` (a top-level kind; it has no ObjectMeta).
    pub(crate) DELETE_OPTIONS = "DeleteOptions" {
        1 "gracePeriodSeconds" I64 Ptr,
        2 "preconditions" Msg(&PRECONDITIONS) Ptr,
        3 "orphanDependents" Bool Ptr,
        4 "propagationPolicy" Str Ptr,
        5 "dryRun" Str Rep,
        6 "ignoreStoreReadErrorWithClusterBreakingPotential" Bool Ptr,
    }

    /// `Preconditions`: both fields are pointers.
    pub(crate) PRECONDITIONS = "Preconditions" {
        1 "uid" Str Ptr,
        2 "resourceVersion" Str Ptr,
    }

    /// `LabelSelectorRequirement`: key and operator have no `omitempty`.
    pub(crate) LABEL_SELECTOR_REQUIREMENT = "LabelSelectorRequirement" {
        1 "key" Str Always,
        2 "operator" Str Always,
        3 "values" Str Rep,
    }

    /// `FieldSelectorRequirement`: same shape as the label one.
    pub(crate) FIELD_SELECTOR_REQUIREMENT = "FieldSelectorRequirement" {
        1 "key" Str Always,
        2 "operator" Str Always,
        3 "values" Str Rep,
    }
}
