//! Schemas for the `core/v1` kinds kubectl creates with its typed clients (field numbers from
//! `k8s.io/api/core/v1/generated.proto`, JSON names and omission rules from `types.go`).

use crate::meta_v1::{CONDITION, OBJECT_META};
use crate::schema::{Card, Ty, f};

/// Every top-level kind starts with `metadata = 1` (a struct, so always emitted).
const METADATA: crate::schema::Field = f(1, "metadata", Ty::Msg(&OBJECT_META), Card::Omit);

msg! {
    pub(crate) CONFIG_MAP = "ConfigMap" {
        METADATA,
        4 "immutable" Bool Ptr,
        2 "data" MapStr Rep,
        3 "binaryData" MapBytes Rep,
    }

    pub(crate) SECRET = "Secret" {
        METADATA,
        5 "immutable" Bool Ptr,
        2 "data" MapBytes Rep,
        4 "stringData" MapStr Rep,
        3 "type" Str Omit,
    }

    pub(crate) NAMESPACE = "Namespace" {
        METADATA,
        2 "spec" Msg(&NAMESPACE_SPEC) Omit,
        3 "status" Msg(&NAMESPACE_STATUS) Omit,
    }

    NAMESPACE_SPEC = "NamespaceSpec" {
        1 "finalizers" Str Rep,
    }

    NAMESPACE_STATUS = "NamespaceStatus" {
        1 "phase" Str Omit,
        2 "conditions" Msg(&NAMESPACE_CONDITION) Rep,
    }

    NAMESPACE_CONDITION = "NamespaceCondition" {
        1 "type" Str Always,
        2 "status" Str Always,
        4 "lastTransitionTime" Time Omit,
        5 "reason" Str Omit,
        6 "message" Str Omit,
    }

    pub(crate) SERVICE_ACCOUNT = "ServiceAccount" {
        METADATA,
        2 "secrets" Msg(&OBJECT_REFERENCE) Rep,
        3 "imagePullSecrets" Msg(&LOCAL_OBJECT_REFERENCE) Rep,
        4 "automountServiceAccountToken" Bool Ptr,
    }

    OBJECT_REFERENCE = "ObjectReference" {
        1 "kind" Str Omit,
        2 "namespace" Str Omit,
        3 "name" Str Omit,
        4 "uid" Str Omit,
        5 "apiVersion" Str Omit,
        6 "resourceVersion" Str Omit,
        7 "fieldPath" Str Omit,
    }

    LOCAL_OBJECT_REFERENCE = "LocalObjectReference" {
        1 "name" Str Omit,
    }

    pub(crate) SERVICE = "Service" {
        METADATA,
        2 "spec" Msg(&SERVICE_SPEC) Omit,
        3 "status" Msg(&SERVICE_STATUS) Omit,
    }

    SERVICE_SPEC = "ServiceSpec" {
        1 "ports" Msg(&SERVICE_PORT) Rep,
        2 "selector" MapStr Rep,
        3 "clusterIP" Str Omit,
        18 "clusterIPs" Str Rep,
        4 "type" Str Omit,
        5 "externalIPs" Str Rep,
        7 "sessionAffinity" Str Omit,
        8 "loadBalancerIP" Str Omit,
        9 "loadBalancerSourceRanges" Str Rep,
        10 "externalName" Str Omit,
        11 "externalTrafficPolicy" Str Omit,
        12 "healthCheckNodePort" I32 Omit,
        13 "publishNotReadyAddresses" Bool Omit,
        14 "sessionAffinityConfig" Msg(&SESSION_AFFINITY_CONFIG) Ptr,
        19 "ipFamilies" Str Rep,
        17 "ipFamilyPolicy" Str Ptr,
        20 "allocateLoadBalancerNodePorts" Bool Ptr,
        21 "loadBalancerClass" Str Ptr,
        22 "internalTrafficPolicy" Str Ptr,
        23 "trafficDistribution" Str Ptr,
    }

    /// `ServicePort`: `port` has no `omitempty`; `targetPort` is a struct, so always emitted.
    SERVICE_PORT = "ServicePort" {
        1 "name" Str Omit,
        2 "protocol" Str Omit,
        6 "appProtocol" Str Ptr,
        3 "port" I32 Always,
        4 "targetPort" IntOrString Omit,
        5 "nodePort" I32 Omit,
    }

    SESSION_AFFINITY_CONFIG = "SessionAffinityConfig" {
        1 "clientIP" Msg(&CLIENT_IP_CONFIG) Ptr,
    }

    CLIENT_IP_CONFIG = "ClientIPConfig" {
        1 "timeoutSeconds" I32 Ptr,
    }

    SERVICE_STATUS = "ServiceStatus" {
        1 "loadBalancer" Msg(&LOAD_BALANCER_STATUS) Omit,
        2 "conditions" Msg(&CONDITION) Rep,
    }

    LOAD_BALANCER_STATUS = "LoadBalancerStatus" {
        1 "ingress" Msg(&LOAD_BALANCER_INGRESS) Rep,
    }

    LOAD_BALANCER_INGRESS = "LoadBalancerIngress" {
        1 "ip" Str Omit,
        2 "hostname" Str Omit,
        3 "ipMode" Str Ptr,
        4 "ports" Msg(&PORT_STATUS) Rep,
    }

    PORT_STATUS = "PortStatus" {
        1 "port" I32 Always,
        2 "protocol" Str Always,
        3 "error" Str Ptr,
    }
}
