//! Which uid, gid and additional gids a container runs as (pure: the image's /etc/passwd and
//! /etc/group come in as text, read by `runtime::passwd`).
//!
//! Reproduces the chain upstream runs through: the kubelet asks the runtime for the image user
//! (containerd CRI's `getUserFromImage`: the part before `:` as a numeric uid, else as a user name —
//! the image's group is dropped), checks `runAsNonRoot` (`verifyRunAsNonRoot`: a non-numeric image
//! user cannot be verified and is refused), and passes `runAsUser` (else the image uid) or the image
//! user name plus `runAsGroup` to containerd, which resolves them against the image's files
//! (`oci.WithUser`/`WithUserID`/`WithUsername`), adds the user's memberships from /etc/group
//! (`WithAdditionalGIDs`), always includes the primary gid (containerd 1.6.18+, CVE-2023-25173),
//! and merges the pod's supplemental groups and fsGroup, sorted and without duplicates.

use super::{SpecError, SpecInput, pick};

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Meaningful lines of a colon-separated database: no blanks, no `#` comments.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

/// Parses /etc/passwd (`name:password:uid:gid:gecos:home:shell`). Lines whose uid or gid is not a
/// number are skipped: a malformed entry must never resolve to uid 0.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// Parses /etc/group (`name:password:gid:member,member`).
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The image USER as the kubelet sees it through CRI's image status.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageUser {
    /// Numeric (also: no USER at all, which the kubelet treats as uid 0).
    Uid(i64),
    /// A user name, to be looked up in the image's /etc/passwd.
    Name(String),
}

impl ImageUser {
    /// `USER` of the image config: `""`, `uid`, `uid:gid`, `name`, `name:group`; only the part
    /// before `:` counts, as in containerd CRI's `getUserFromImage`.
    pub fn parse(user: &str) -> ImageUser {
        let u = user.split(':').next().unwrap_or_default();
        match u.parse::<i64>() {
            Ok(uid) => ImageUser::Uid(uid),
            Err(_) if u.is_empty() => ImageUser::Uid(0),
            Err(_) => ImageUser::Name(u.to_string()),
        }
    }
}

/// Resolves the container's user as kubelet + containerd CRI do (see the module doc). `passwd` and
/// `group` are the image's files, `None` when the image has none.
pub fn resolve_user(input: &SpecInput) -> Result<(u32, u32, Vec<u32>), SpecError> {
    let c = input.container;
    let csc = c.security_context.as_ref();
    let psc = input.pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let run_as_user = pick(csc, psc, |c| c.run_as_user, |p| p.run_as_user);
    let run_as_group = pick(csc, psc, |c| c.run_as_group, |p| p.run_as_group);
    let image_user = ImageUser::parse(&input.image.user);

    // verifyRunAsNonRoot (kuberuntime_container_linux.go / security_context_others.go).
    if pick(csc, psc, |c| c.run_as_non_root, |p| p.run_as_non_root).unwrap_or(false) {
        let pod = crate::pods::pod_display(input.pod);
        let container = c.name.clone();
        match (run_as_user, &image_user) {
            (Some(0), _) => return Err(SpecError::RunAsUserRoot { pod, container }),
            (Some(_), _) => {}
            (None, ImageUser::Uid(0)) => return Err(SpecError::RunAsRoot { pod, container }),
            (None, ImageUser::Uid(_)) => {}
            (None, ImageUser::Name(user)) => {
                return Err(SpecError::NonNumericUser {
                    user: user.clone(),
                    pod,
                    container,
                });
            }
        }
    }

    // determineEffectiveSecurityContext: runAsUser wins, else the image's uid or user name.
    let user = match run_as_user {
        Some(u) => ImageUser::Uid(u),
        None => image_user,
    };
    let id = |v: i64| {
        u32::try_from(v).map_err(|_| SpecError::BadUser {
            container: c.name.clone(),
            user: v.to_string(),
        })
    };
    let passwd = input.passwd.as_deref().map(parse_passwd);
    let users = passwd.as_deref().unwrap_or_default();
    // WithUser / WithUserID / WithUsername.
    let (uid, mut gid, name) = match &user {
        ImageUser::Uid(u) => {
            let uid = id(*u)?;
            let entry = users.iter().find(|e| e.uid == uid);
            (uid, entry.map_or(0, |e| e.gid), entry.map(|e| e.name.clone()))
        }
        ImageUser::Name(n) => {
            let entry = users
                .iter()
                .find(|e| &e.name == n)
                .ok_or_else(|| SpecError::UnknownUser {
                    container: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    user: n.clone(),
                })?;
            (entry.uid, entry.gid, Some(n.clone()))
        }
    };
    if let Some(g) = run_as_group {
        gid = id(g)?;
    }
    // WithAdditionalGIDs: groups listing the user as a member (not its own-named group).
    let mut gids: Vec<u32> = name
        .map(|name| {
            parse_group(input.group.as_deref().unwrap_or_default())
                .into_iter()
                .filter(|g| g.name != name && g.members.contains(&name))
                .map(|g| g.gid)
                .collect()
        })
        .unwrap_or_default();
    gids.push(gid);
    // WithSupplementalGroups: the pod's supplementalGroups and fsGroup.
    gids.extend(
        psc.into_iter()
            .flat_map(|p| p.supplemental_groups.iter().flatten().copied().chain(p.fs_group))
            .filter_map(|g| u32::try_from(g).ok()),
    );
    gids.sort_unstable();
    gids.dedup();
    Ok((uid, gid, gids))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "# comment\nroot:x:0:0:root:/root:/bin/sh\n\napp:x:1000:1001::/home/app:/bin/sh\nbroken:x:abc:0::/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:root,app\napp:x:1001:app\nstaff:x:50: app , other\nnogroup:x:65534:\n";

    #[test]
    fn parses_passwd_and_group_skipping_comments_and_malformed_lines() {
        let p = parse_passwd(PASSWD);
        assert_eq!(
            p.iter()
                .map(|e| (e.name.as_str(), e.uid, e.gid))
                .collect::<Vec<_>>(),
            [("root", 0, 0), ("app", 1000, 1001), ("nobody", 65534, 65534)]
        );
        let g = parse_group(GROUP);
        assert_eq!(g[1].members, ["root", "app"]);
        assert_eq!(g[3].members, ["app", "other"], "members are trimmed");
        assert!(g[0].members.is_empty());
    }

    #[test]
    fn image_user_keeps_only_the_part_before_the_colon() {
        assert_eq!(ImageUser::parse(""), ImageUser::Uid(0));
        assert_eq!(ImageUser::parse("1234"), ImageUser::Uid(1234));
        assert_eq!(ImageUser::parse("1234:50"), ImageUser::Uid(1234));
        assert_eq!(ImageUser::parse("app:staff"), ImageUser::Name("app".into()));
        assert_eq!(ImageUser::parse(":50"), ImageUser::Uid(0));
    }
}
