//! Sidecar containers (KEP-753): init containers with `restartPolicy: Always`. They start in init
//! order, count as done for the next init container once started, keep running (and restart) next
//! to the app containers, and stop last, in reverse order (upstream's `IsRestartableInitContainer`,
//! `computeInitContainerActions` and the kill ordering of `killContainersWithSyncResult`).

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::observed::ContainerAttempt;

/// Whether an init container is a sidecar (a restartable init container).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Upstream's `started` of a container attempt: running, and its startup probe (if any) succeeded.
pub fn attempt_started(c: &Container, a: &ContainerAttempt) -> bool {
    a.state.is_running() && a.started.unwrap_or(c.startup_probe.is_none())
}

/// The order in which a pod's running containers are stopped: first everything that is not a
/// sidecar (app containers, a running regular init container, containers no longer in the spec),
/// all at once; then the sidecars one by one, the last declared first, so a sidecar outlives every
/// container that may depend on it.
pub fn kill_stages<'a>(
    spec: Option<&PodSpec>,
    running: &[&'a ContainerAttempt],
) -> Vec<Vec<&'a ContainerAttempt>> {
    let sidecars: Vec<&str> = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| is_sidecar(c))
        .map(|c| c.name.as_str())
        .collect();
    let first: Vec<&ContainerAttempt> = running
        .iter()
        .copied()
        .filter(|a| !sidecars.contains(&a.name.as_str()))
        .collect();
    let mut stages = vec![];
    if !first.is_empty() {
        stages.push(first);
    }
    for name in sidecars.iter().rev() {
        let stage: Vec<&ContainerAttempt> = running.iter().copied().filter(|a| a.name == *name).collect();
        if !stage.is_empty() {
            stages.push(stage);
        }
    }
    stages
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::pods::fixtures::*;
    use crate::pods::observed::AttemptState;

    fn sidecar(name: &str) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..container(name, "img:1")
        }
    }

    #[test]
    fn app_containers_stop_first_then_sidecars_in_reverse_order() {
        let mut p = pod_with(
            vec![container("app1", "img:1"), container("app2", "img:1")],
            "Always",
        );
        set_init(
            &mut p,
            vec![sidecar("logs"), container("setup", "img:1"), sidecar("proxy")],
        );
        let all = [
            running(&p, "logs", 0, t(1)),
            running(&p, "proxy", 0, t(3)),
            running(&p, "app1", 0, t(4)),
            ContainerAttempt {
                name: "gone".into(),
                ..running(&p, "app1", 0, t(4))
            },
            running(&p, "app2", 0, t(4)),
        ];
        let refs: Vec<&ContainerAttempt> = all.iter().collect();
        let names: Vec<Vec<&str>> = kill_stages(p.spec.as_ref(), &refs)
            .iter()
            .map(|s| s.iter().map(|a| a.name.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            vec![vec!["app1", "gone", "app2"], vec!["proxy"], vec!["logs"]]
        );
    }

    #[test]
    fn only_sidecars_left_or_nothing() {
        let mut p = pod_with(vec![container("app", "img:1")], "Never");
        set_init(&mut p, vec![sidecar("a"), sidecar("b")]);
        let all = [running(&p, "a", 0, t(1))];
        let refs: Vec<&ContainerAttempt> = all.iter().collect();
        let stages = kill_stages(p.spec.as_ref(), &refs);
        assert_eq!(stages.len(), 1);
        assert_eq!(stages[0][0].name, "a");
        assert!(kill_stages(p.spec.as_ref(), &[]).is_empty());
    }

    #[test]
    fn started_needs_the_startup_probe_when_there_is_one() {
        let p = pod_with(vec![container("app", "img:1")], "Never");
        let mut a = running(&p, "app", 0, t(1));
        let plain = sidecar("s");
        let probed = Container {
            startup_probe: Some(Default::default()),
            ..sidecar("s")
        };
        assert!(attempt_started(&plain, &a));
        assert!(!attempt_started(&probed, &a));
        a.started = Some(true);
        assert!(attempt_started(&probed, &a));
        a.state = AttemptState::Created;
        assert!(!attempt_started(&plain, &a));
    }
}
