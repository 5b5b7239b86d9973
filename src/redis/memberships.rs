//! The group memberships this process made, and when their channels last
//! received here. With what waits on a channel now (the caller knows),
//! that says which are alive: those are renewed before `group_expiry`
//! takes them, and added back to a server that lost them (see `renewal`);
//! the rest are left to expire, as the members of a process that died.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A channel in one or more of this process's groups.
struct Channel {
    groups: usize,
    joined: Instant,
    /// When a receive of it last started or ended. Joining is not
    /// receiving: a channel added for a consumer elsewhere is not alive here.
    last: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Memberships {
    /// Group -> the channels this process added and has not discarded.
    groups: HashMap<String, HashSet<String>>,
    channels: HashMap<String, Channel>,
}

impl Memberships {
    /// How many groups this process's channels are in.
    pub(super) fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub(super) fn join(&mut self, group: &str, channel: &str) {
        if !self
            .groups
            .entry(group.to_owned())
            .or_default()
            .insert(channel.to_owned())
        {
            return;
        }
        self.channels
            .entry(channel.to_owned())
            .or_insert_with(|| Channel {
                groups: 0,
                joined: Instant::now(),
                last: None,
            })
            .groups += 1;
    }

    pub(super) fn leave(&mut self, group: &str, channel: &str) {
        let Some(members) = self.groups.get_mut(group) else {
            return;
        };
        if !members.remove(channel) {
            return;
        }
        if members.is_empty() {
            self.groups.remove(group);
        }
        if let Some(state) = self.channels.get_mut(channel) {
            state.groups -= 1;
            if state.groups == 0 {
                self.channels.remove(channel);
            }
        }
    }

    /// A receive of `channel` started or ended.
    pub(super) fn touched(&mut self, channel: &str) {
        if let Some(state) = self.channels.get_mut(channel) {
            state.last = Some(Instant::now());
        }
    }

    /// Forgets the channels not `waiting` on that neither joined nor
    /// received within `gone`: their memberships have expired in Redis,
    /// and nothing renews or adds back an expired one.
    pub(super) fn forget_older(&mut self, gone: Duration, waiting: impl Fn(&str) -> bool) {
        let old = |name: &String, state: &Channel| {
            !waiting(name) && state.last.unwrap_or(state.joined).elapsed() > gone
        };
        let forgotten: Vec<String> = self
            .channels
            .iter()
            .filter(|(name, state)| old(name, state))
            .map(|(name, _)| name.clone())
            .collect();
        if forgotten.is_empty() {
            return;
        }
        for name in &forgotten {
            self.channels.remove(name);
        }
        self.groups.retain(|_, members| {
            members.retain(|member| !forgotten.contains(member));
            !members.is_empty()
        });
    }

    /// Each group with its channels that are alive: `waiting` on now, or
    /// that received within `lately`.
    pub(super) fn live(
        &self,
        lately: Duration,
        waiting: impl Fn(&str) -> bool,
    ) -> Vec<(&str, Vec<&str>)> {
        let alive = |channel: &&String| {
            waiting(channel)
                || self
                    .channels
                    .get(channel.as_str())
                    .and_then(|state| state.last)
                    .is_some_and(|last| last.elapsed() <= lately)
        };
        self.groups
            .iter()
            .map(|(group, members)| {
                let live: Vec<&str> = members.iter().filter(alive).map(String::as_str).collect();
                (group.as_str(), live)
            })
            .filter(|(_, live)| !live.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(
        memberships: &Memberships,
        lately: Duration,
        waiting: &[&str],
    ) -> Vec<(String, Vec<String>)> {
        let mut live: Vec<_> = memberships
            .live(lately, |channel| waiting.contains(&channel))
            .into_iter()
            .map(|(group, mut channels)| {
                channels.sort_unstable();
                (
                    group.to_owned(),
                    channels.into_iter().map(str::to_owned).collect(),
                )
            })
            .collect();
        live.sort();
        live
    }

    #[test]
    fn only_channels_waited_on_or_receiving_lately_are_live() {
        let mut memberships = Memberships::default();
        memberships.join("room", "a");
        memberships.join("room", "b");
        memberships.join("hall", "a");
        // Joined, but not received on here: not alive.
        assert!(live(&memberships, Duration::from_secs(60), &[]).is_empty());
        let lately = Duration::from_millis(10);
        let expected = vec![
            ("hall".to_owned(), vec!["a".to_owned()]),
            ("room".to_owned(), vec!["a".to_owned()]),
        ];
        assert_eq!(live(&memberships, lately, &["a"]), expected);
        memberships.touched("b");
        assert_eq!(live(&memberships, lately, &[])[0].1, vec!["b".to_owned()]);
        std::thread::sleep(Duration::from_millis(20));
        assert!(live(&memberships, lately, &[]).is_empty());
    }

    #[test]
    fn channels_long_gone_are_forgotten() {
        let mut memberships = Memberships::default();
        memberships.join("room", "gone");
        memberships.join("room", "waited");
        memberships.join("hall", "gone");
        std::thread::sleep(Duration::from_millis(20));
        memberships.forget_older(Duration::from_millis(10), |channel| channel == "waited");
        assert_eq!(memberships.group_count(), 1);
        assert_eq!(memberships.channels.len(), 1);
    }

    #[test]
    fn leaving_every_group_forgets_the_channel() {
        let mut memberships = Memberships::default();
        memberships.join("room", "a");
        memberships.join("hall", "a");
        memberships.leave("room", "a");
        assert_eq!(memberships.group_count(), 1);
        memberships.leave("hall", "a");
        assert_eq!(memberships.group_count(), 0);
        assert!(memberships.channels.is_empty());
        memberships.touched("a");
        assert!(memberships.channels.is_empty());
    }
}
