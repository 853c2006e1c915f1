//! A directed graph over keys, and the algorithms the reference checks need: shortest paths,
//! strongly connected components, and per-node bounds (longest chain, expansion size).
//!
//! Every walk is iterative (no recursion), so a hostile or corrupt environment with deep
//! chains cannot overflow the stack, and each is linear in the size of the graph (the
//! shortest-path search is linear per call).

use std::collections::{HashMap, HashSet, VecDeque};

/// A directed graph over keys. An edge `a -> b` means `a` depends on `b`.
#[derive(Debug)]
pub(super) struct Graph<'a> {
    pub(super) names: Vec<&'a str>,
    ids: HashMap<&'a str, usize>,
    pub(super) adj: Vec<Vec<usize>>,
}

impl<'a> Graph<'a> {
    /// Builds the graph; edges to keys that are not nodes are dropped (reported elsewhere as
    /// unknown references).
    pub(super) fn new(nodes: Vec<(&'a str, Vec<&'a str>)>) -> Self {
        let mut ids = HashMap::with_capacity(nodes.len());
        let mut names = Vec::with_capacity(nodes.len());
        for (name, _) in &nodes {
            ids.entry(*name).or_insert_with(|| {
                names.push(*name);
                names.len() - 1
            });
        }
        let mut adj = vec![Vec::new(); names.len()];
        for (name, edges) in nodes {
            let from = ids[name];
            adj[from] = edges.iter().filter_map(|e| ids.get(e).copied()).collect();
        }
        Self { names, ids, adj }
    }

    pub(super) fn id(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }

    pub(super) fn transpose(&self) -> Self {
        let mut adj = vec![Vec::new(); self.adj.len()];
        for (from, edges) in self.adj.iter().enumerate() {
            for &to in edges {
                adj[to].push(from);
            }
        }
        Self {
            names: self.names.clone(),
            ids: self.ids.clone(),
            adj,
        }
    }

    /// The shortest path `from -> … -> to`, both ends included.
    pub(super) fn shortest_path(&self, from: usize, to: usize) -> Option<Vec<usize>> {
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = HashSet::from([from]);
        while let Some(v) = queue.pop_front() {
            if v == to {
                let mut path = vec![v];
                let mut cur = v;
                while let Some(&p) = parent.get(&cur) {
                    path.push(p);
                    cur = p;
                }
                path.reverse();
                return Some(path);
            }
            for &w in &self.adj[v] {
                if seen.insert(w) {
                    parent.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        None
    }

    /// Strongly connected components (Tarjan, iterative), each emitted after every component
    /// it can reach: sinks first.
    pub(super) fn sccs(&self) -> Vec<Vec<usize>> {
        const UNSEEN: usize = usize::MAX;
        let n = self.adj.len();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut out = Vec::new();
        let mut next = 0;
        // (node, position of the next edge to follow)
        let mut call: Vec<(usize, usize)> = Vec::new();
        for root in 0..n {
            if index[root] != UNSEEN {
                continue;
            }
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            call.push((root, 0));
            while let Some(top) = call.last_mut() {
                let v = top.0;
                if let Some(&w) = self.adj[v].get(top.1) {
                    top.1 += 1;
                    if index[w] == UNSEEN {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        call.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                call.pop();
                if let Some(&(u, _)) = call.last() {
                    low[u] = low[u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(comp);
                }
            }
        }
        out
    }

    /// For every node: its longest chain and the size of its expansion tree (both counting
    /// nodes, the node itself included), ignoring nodes on cycles, plus whether it lies on or
    /// above a cycle. Sizes stop growing past `cap + 1`.
    pub(super) fn bounds(&self, cap: usize) -> Bounds {
        let sccs = self.sccs();
        let n = self.adj.len();
        let mut b = Bounds {
            height: vec![1; n],
            size: vec![1; n],
            next: vec![None; n],
            cyclic: vec![false; n],
            tainted: vec![false; n],
        };
        for comp in &sccs {
            if comp.len() > 1 || self.adj[comp[0]].contains(&comp[0]) {
                for &v in comp {
                    b.cyclic[v] = true;
                    b.tainted[v] = true;
                }
            }
        }
        // Tarjan emits sinks first, so successors are final before their predecessors.
        for comp in &sccs {
            let v = comp[0];
            if b.cyclic[v] {
                continue;
            }
            for &w in &self.adj[v] {
                b.tainted[v] |= b.tainted[w];
                if b.cyclic[w] {
                    continue;
                }
                if b.height[w] + 1 > b.height[v] {
                    b.height[v] = b.height[w] + 1;
                    b.next[v] = Some(w);
                }
                b.size[v] = b.size[v].saturating_add(b.size[w]).min(cap + 1);
            }
        }
        b
    }

    /// The path following `next` from `v`, `v` excluded.
    pub(super) fn follow(&self, v: usize, next: &[Option<usize>]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = v;
        while let Some(w) = next[cur] {
            out.push(w);
            cur = w;
        }
        out
    }

    /// The longest chain through `v` (dependents first), ignoring nodes on cycles.
    pub(super) fn chain_through(&self, v: usize) -> Vec<usize> {
        let down = self.bounds(0);
        let t = self.transpose();
        let up = t.bounds(0);
        let mut chain = t.follow(v, &up.next);
        chain.reverse();
        chain.push(v);
        chain.extend(self.follow(v, &down.next));
        chain
    }

    /// `v` and every node that depends on it, directly or not.
    pub(super) fn dependents(&self, v: usize) -> Vec<usize> {
        let t = self.transpose();
        let mut seen = HashSet::from([v]);
        let mut queue = VecDeque::from([v]);
        let mut out = Vec::new();
        while let Some(u) = queue.pop_front() {
            out.push(u);
            for &w in &t.adj[u] {
                if seen.insert(w) {
                    queue.push_back(w);
                }
            }
        }
        out
    }

    /// A shortest cycle through `v`, starting and ending at `v`, if `v` is on one.
    pub(super) fn cycle_at(&self, v: usize) -> Option<Vec<usize>> {
        if self.adj[v].contains(&v) {
            return Some(vec![v, v]);
        }
        self.adj[v]
            .iter()
            .filter_map(|&w| self.shortest_path(w, v))
            .min_by_key(Vec::len)
            .map(|path| {
                let mut cycle = vec![v];
                cycle.extend(path);
                cycle
            })
    }

    /// For a node on or above a cycle: the path down to the first node on a cycle, and a
    /// cycle through that node.
    pub(super) fn cycle_below(&self, b: &Bounds, from: usize) -> Option<(Vec<usize>, Vec<usize>)> {
        let mut path = vec![from];
        let mut cur = from;
        while !b.cyclic[cur] {
            cur = *self.adj[cur].iter().find(|&&w| b.tainted[w])?;
            path.push(cur);
        }
        Some((path, self.cycle_at(cur)?))
    }

    /// Keys of `path`, joined with ` -> `.
    pub(super) fn render(&self, path: &[usize]) -> String {
        path.iter()
            .map(|&v| self.names[v])
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}

/// Per-node results of [`Graph::bounds`].
#[derive(Debug)]
pub(super) struct Bounds {
    /// Nodes in the longest chain from the node (1 for a leaf).
    pub(super) height: Vec<usize>,
    /// Nodes in the node's expansion tree, counting repeats (1 for a leaf), capped.
    pub(super) size: Vec<usize>,
    /// The next node on the longest chain.
    pub(super) next: Vec<Option<usize>>,
    /// Whether the node is on a cycle.
    pub(super) cyclic: Vec<bool>,
    /// Whether the node is on a cycle or depends on one.
    pub(super) tainted: Vec<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&'static str, &[&'static str])]) -> Graph<'static> {
        Graph::new(edges.iter().map(|(n, e)| (*n, e.to_vec())).collect())
    }

    #[test]
    fn sccs_come_sinks_first() {
        let g = graph(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a", "d"]),
            ("d", &[]),
            ("e", &["e"]),
        ]);
        let names: Vec<Vec<&str>> = g
            .sccs()
            .iter()
            .map(|c| {
                let mut n: Vec<&str> = c.iter().map(|&v| g.names[v]).collect();
                n.sort();
                n
            })
            .collect();
        assert_eq!(names, vec![vec!["d"], vec!["a", "b", "c"], vec!["e"]]);
    }

    #[test]
    fn bounds_count_nodes_and_skip_cycles() {
        let g = graph(&[
            ("a", &["b", "c"]),
            ("b", &["d"]),
            ("c", &["d"]),
            ("d", &[]),
            ("x", &["y", "a"]),
            ("y", &["x"]),
            ("z", &["x"]),
        ]);
        let b = g.bounds(100);
        assert_eq!(b.height[..4], [3, 2, 2, 1]);
        // a's tree: a, b, d, c, d.
        assert_eq!(b.size[..4], [5, 2, 2, 1]);
        assert_eq!(g.render(&g.follow(0, &b.next)), "b -> d");
        assert_eq!(b.cyclic, [false, false, false, false, true, true, false]);
        assert_eq!(b.tainted, [false, false, false, false, true, true, true]);
        assert_eq!(g.bounds(3).size[0], 4, "capped at cap + 1");

        let (path, cycle) = g.cycle_below(&b, 6).unwrap();
        assert_eq!(g.render(&path), "z -> x");
        assert_eq!(g.render(&cycle), "x -> y -> x");
        assert!(g.cycle_below(&b, 0).is_none());
    }

    #[test]
    fn chains_and_dependents() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &[]), ("d", &["b"])]);
        assert_eq!(g.render(&g.chain_through(1)), "a -> b -> c");
        let mut deps: Vec<&str> = g.dependents(1).iter().map(|&v| g.names[v]).collect();
        deps.sort();
        assert_eq!(deps, ["a", "b", "d"]);
    }

    #[test]
    fn shortest_paths_and_cycles() {
        let g = graph(&[
            ("a", &["b", "c"]),
            ("b", &["c"]),
            ("c", &["a"]),
            ("s", &["s"]),
        ]);
        assert_eq!(g.render(&g.shortest_path(0, 2).unwrap()), "a -> c");
        assert_eq!(g.render(&g.cycle_at(0).unwrap()), "a -> c -> a");
        assert_eq!(g.render(&g.cycle_at(3).unwrap()), "s -> s");
        assert!(
            graph(&[("a", &[]), ("b", &[])])
                .shortest_path(0, 1)
                .is_none()
        );
    }

    #[test]
    fn deep_graphs_do_not_overflow_the_stack() {
        let names: Vec<String> = (0..200_000).map(|i| format!("n{i}")).collect();
        let nodes: Vec<(&str, Vec<&str>)> = (0..names.len())
            .map(|i| {
                let next = if i + 1 < names.len() {
                    vec![names[i + 1].as_str()]
                } else {
                    vec![]
                };
                (names[i].as_str(), next)
            })
            .collect();
        let g = Graph::new(nodes);
        assert_eq!(g.bounds(1024).height[0], 200_000);
        assert_eq!(g.sccs().len(), 200_000);
    }
}
