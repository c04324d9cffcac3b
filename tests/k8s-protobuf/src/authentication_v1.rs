//! Schemas for `authentication.k8s.io/v1` TokenRequest and SelfSubjectReview (field numbers from
//! `k8s.io/api/authentication/v1/generated.proto`). Several fields lack `omitempty` upstream, so
//! Go's JSON (and ours) carries `"audiences": null`, `"boundObjectRef": null`, `"token": ""`.
//! The alpha `attestations` map (field 5, newer than 1.33) is skipped like any unknown field.

use crate::meta_v1::OBJECT_META;

msg! {
    pub(crate) TOKEN_REQUEST = "TokenRequest" {
        1 "metadata" Msg(&OBJECT_META) Omit,
        2 "spec" Msg(&TOKEN_REQUEST_SPEC) Always,
        3 "status" Msg(&TOKEN_REQUEST_STATUS) Omit,
    }

    TOKEN_REQUEST_SPEC = "TokenRequestSpec" {
        1 "audiences" Str RepNull,
        4 "expirationSeconds" I64 PtrNull,
        3 "boundObjectRef" Msg(&BOUND_OBJECT_REFERENCE) PtrNull,
    }

    BOUND_OBJECT_REFERENCE = "BoundObjectReference" {
        1 "kind" Str Omit,
        2 "apiVersion" Str Omit,
        3 "name" Str Omit,
        4 "uid" Str Omit,
    }

    TOKEN_REQUEST_STATUS = "TokenRequestStatus" {
        1 "token" Str Always,
        2 "expirationTimestamp" Time Always,
    }

    /// `SelfSubjectReview` (`kubectl auth whoami`).
    pub(crate) SELF_SUBJECT_REVIEW = "SelfSubjectReview" {
        1 "metadata" Msg(&OBJECT_META) Omit,
        2 "status" Msg(&SELF_SUBJECT_REVIEW_STATUS) Omit,
    }

    SELF_SUBJECT_REVIEW_STATUS = "SelfSubjectReviewStatus" {
        1 "userInfo" Msg(&USER_INFO) Omit,
    }

    USER_INFO = "UserInfo" {
        1 "username" Str Omit,
        2 "uid" Str Omit,
        3 "groups" Str Rep,
        4 "extra" MapStrList Rep,
    }
}
