//! Assigning lines to scored nodes. The objective, in order: place as many
//! units as the rule allows, use as few nodes (shipments) as possible, then
//! the lowest cost, where a plan's cost is the sum of its nodes' scores
//! plus a penalty for each line sent to a node whose standing for that SKU
//! is lowered.
//!
//! One node that holds everything wins outright (cheapest such node).
//! Otherwise a greedy cover takes, round by round, the node that places the
//! most remaining units (cheapest on ties), then local search drops nodes
//! whose lines fit on the others and swaps nodes for cheaper ones that can
//! carry the same lines. `exhaustive` measures how far this lands from the
//! optimum (`make bench` reports the gap).
use super::model::Stock;

/// A placement problem.
pub struct Problem<'a> {
    /// Units to place per line.
    pub need: &'a [i64],
    /// Order SKU index per line.
    pub sku_of: &'a [usize],
    pub skus: usize,
    /// Eligible nodes.
    pub cands: &'a [usize],
    /// Score per node index (lower is better).
    pub score: &'a [f64],
    pub stock: &'a Stock,
    /// (node, sku) with lowered standing.
    pub penalties: &'a [(usize, usize)],
    pub penalty: f64,
    pub max_shipments: usize,
    pub line_split: bool,
}

/// Units of a line at a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub line: usize,
    pub node: usize,
    pub quantity: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Solution {
    pub placed: Vec<Placed>,
    /// Units not placed per line.
    pub left: Vec<i64>,
    /// Nodes used, in the order chosen.
    pub used: Vec<usize>,
    pub cost: f64,
}

impl Problem<'_> {
    pub fn pen(&self, node: usize, sku: usize) -> f64 {
        if !self.penalties.is_empty() && self.penalties.contains(&(node, sku)) {
            self.penalty
        } else {
            0.0
        }
    }

    /// Cost of a set of placements.
    pub fn cost_of(&self, placed: &[Placed], used: &[usize]) -> f64 {
        used.iter().map(|&n| self.score[n]).sum::<f64>()
            + placed
                .iter()
                .map(|p| self.pen(p.node, self.sku_of[p.line]))
                .sum::<f64>()
    }
}

pub fn solve(p: &Problem) -> Solution {
    let whole = WholeLines::of(p);
    if let Some(s) = single_node(p, whole.as_ref()) {
        return s;
    }
    let mut s = match &whole {
        Some(w) => w.greedy(p),
        None => greedy_by_cover(p),
    };
    if !p.line_split && s.used.len() > 1 {
        improve(p, whole.as_ref(), &mut s);
    }
    s.cost = p.cost_of(&s.placed, &s.used);
    s
}

/// The cheapest node that holds everything, counting penalties.
fn single_node(p: &Problem, whole: Option<&WholeLines>) -> Option<Solution> {
    let mut demand = [0i64; 64];
    if whole.is_none() {
        if p.skus > 64 {
            return None;
        }
        for (l, n) in p.need.iter().enumerate() {
            demand[p.sku_of[l]] += n;
        }
    }
    let demand = &demand[..p.skus.min(64)];
    let all = open_lines(p);
    let holds_all = |c: usize| match whole {
        // Whole lines of one SKU each: the node's mask says it at once.
        Some(w) => w.mask[c] == all,
        None => demand
            .iter()
            .zip(p.stock.at(c))
            .all(|(d, have)| *d <= i64::from(*have)),
    };
    let mut best: Option<(usize, f64)> = None;
    for &c in p.cands.iter().filter(|&&c| holds_all(c)) {
        let cost = p.score[c]
            + (0..p.need.len())
                .filter(|l| p.need[*l] > 0)
                .map(|l| p.pen(c, p.sku_of[l]))
                .sum::<f64>();
        if best.is_none_or(|(_, b)| cost < b) {
            best = Some((c, cost));
        }
    }
    let (node, cost) = best?;
    Some(Solution {
        placed: (0..p.need.len())
            .filter(|l| p.need[*l] > 0)
            .map(|line| Placed {
                line,
                node,
                quantity: p.need[line],
            })
            .collect(),
        left: vec![0; p.need.len()],
        used: vec![node],
        cost,
    })
}

/// The lines with units to place, as a mask (lines past 64 are not in it;
/// masks are used only for orders of 64 lines at most).
fn open_lines(p: &Problem) -> u64 {
    (0..p.need.len().min(64))
        .filter(|&l| p.need[l] > 0)
        .fold(0, |m, l| m | 1 << l)
}

/// The SKUs (bit `k` for SKU `k`, the first 64) of which `have` holds at
/// least `want`. The compares run as vector code (eight SKUs a step, one
/// byte each) and the bytes are packed into bits eight at a time by a
/// multiplication: about a third of the instructions of a compare, shift
/// and or per SKU, for the mask every candidate of every plan needs.
fn covered(want: &[i32], have: &[i32]) -> u64 {
    let n = want.len().min(have.len()).min(64);
    let mut short = [0u8; 64];
    for ((s, w), h) in short.iter_mut().zip(&want[..n]).zip(&have[..n]) {
        *s = u8::from(h < w);
    }
    let mut bits = 0u64;
    for (i, b) in short.chunks_exact(8).take(n.div_ceil(8)).enumerate() {
        let x = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        // Byte j (0 or 1) lands on bit 56 + j.
        bits |= (x.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * i);
    }
    let all = if n == 64 { u64::MAX } else { (1 << n) - 1 };
    !bits & all
}

/// What node `c` would place of `left`, given its stock; calls `place` for
/// each placement. Returns (units, cost).
fn cover(
    p: &Problem,
    c: usize,
    left: &[i64],
    run: &mut [i64],
    mut place: impl FnMut(usize, i64),
) -> (i64, f64) {
    for (r, have) in run.iter_mut().zip(p.stock.at(c)) {
        *r = i64::from(*have);
    }
    let (mut units, mut cost) = (0, p.score[c]);
    for (l, want) in left.iter().enumerate() {
        if *want <= 0 {
            continue;
        }
        let sku = p.sku_of[l];
        let take = if p.line_split {
            (*want).min(run[sku])
        } else if *want <= run[sku] {
            *want
        } else {
            0
        };
        if take > 0 {
            run[sku] -= take;
            units += take;
            cost += p.pen(c, sku);
            place(l, take);
        }
    }
    (units, cost)
}

/// The greedy cover when lines go whole to a node, each line has a SKU of
/// its own and no node is penalised (the common case): whether a node can
/// take a line never changes, so each node's lines are a bit mask computed
/// once, and what each node would place is kept up to date as rounds take
/// lines, instead of being recounted. Same rounds, same choices, same
/// placements as [`greedy_by_cover`].
struct WholeLines {
    /// Lines each node (by index; 0 for a node that is no candidate) can
    /// take.
    mask: Vec<u64>,
}

impl WholeLines {
    fn of(p: &Problem) -> Option<WholeLines> {
        let lines = p.need.len();
        if p.line_split || !p.penalties.is_empty() || lines > 64 {
            return None;
        }
        let mut seen = 0u64;
        for &k in p.sku_of {
            if k >= 64 || seen & (1 << k) != 0 {
                return None;
            }
            seen |= 1 << k;
        }
        // Units wanted per SKU, as stock counts them (a line wanting more
        // than a node can count is left to the cover); SKUs of closed lines
        // are wanted by no mask. On the stack: this runs once per plan.
        let mut want = [0i32; 64];
        let mut open = 0u64;
        for (&need, &sku) in p.need.iter().zip(p.sku_of) {
            if need > Stock::MAX {
                return None;
            }
            if need > 0 {
                want[sku] = need as i32;
                open |= 1 << sku;
            }
        }
        // Orders list their distinct SKUs in line order, so line `l` is
        // mostly SKU `l` and the SKU mask is the line mask.
        let in_line_order = p.sku_of.iter().enumerate().all(|(l, &k)| l == k);
        let want = &want[..p.skus.min(64)];
        // Scores are per node, so their length is the network's.
        let mut mask = vec![0u64; p.score.len()];
        for &c in p.cands {
            let skus = covered(want, p.stock.at(c)) & open;
            mask[c] = if in_line_order {
                skus
            } else {
                p.sku_of
                    .iter()
                    .enumerate()
                    .fold(0, |m, (l, &k)| m | ((skus >> k) & 1) << l)
            };
        }
        Some(WholeLines { mask })
    }

    /// Units of the lines in `mask`: a table of every byte's sum when there
    /// are many candidates (each node's count is asked once, then again
    /// after every round that takes some of its lines), else bit by bit.
    fn units(p: &Problem, sums: Option<&[i64]>, mut mask: u64) -> i64 {
        if let Some(t) = sums {
            return t
                .chunks_exact(256)
                .enumerate()
                .map(|(j, byte)| byte[((mask >> (8 * j)) & 0xFF) as usize])
                .sum();
        }
        let mut sum = 0;
        while mask != 0 {
            sum += p.need[mask.trailing_zeros() as usize];
            mask &= mask - 1;
        }
        sum
    }

    /// The units of every subset of each eight lines: 256 sums per byte of
    /// a line mask, each one more line than a sum already made.
    fn byte_sums(need: &[i64]) -> Vec<i64> {
        let bytes = need.len().div_ceil(8);
        let mut t = vec![0i64; bytes * 256];
        for j in 0..bytes {
            for b in 1..256usize {
                let line = 8 * j + b.trailing_zeros() as usize;
                t[j * 256 + b] = t[j * 256 + (b & (b - 1))] + need.get(line).copied().unwrap_or(0);
            }
        }
        t
    }

    fn greedy(&self, p: &Problem) -> Solution {
        let mut open = open_lines(p);
        // Building the table costs about what 64 candidates' counts do.
        let sums = (p.cands.len() > 64).then(|| Self::byte_sums(p.need));
        let sums = sums.as_deref();
        // What each candidate would place of the lines still open.
        let mut units: Vec<i64> = p
            .cands
            .iter()
            .map(|&c| Self::units(p, sums, self.mask[c]))
            .collect();
        let mut used: Vec<usize> = Vec::new();
        let mut placed = Vec::new();
        while used.len() < p.max_shipments && open != 0 {
            // A node taken places nothing more (it took all its open
            // lines), so `units > 0` also skips the nodes used.
            let mut best: Option<(usize, i64, f64)> = None;
            for (i, &c) in p.cands.iter().enumerate() {
                let cost = p.score[c];
                if units[i] > 0
                    && best.is_none_or(|(_, u, bc)| units[i] > u || (units[i] == u && cost < bc))
                {
                    best = Some((i, units[i], cost));
                }
            }
            let Some((i, _, _)) = best else { break };
            let node = p.cands[i];
            let take = self.mask[node] & open;
            placed.extend(
                (0..p.need.len())
                    .filter(|l| take & (1 << l) != 0)
                    .map(|line| Placed {
                        line,
                        node,
                        quantity: p.need[line],
                    }),
            );
            open &= !take;
            // Whether a node shares lines with the one taken is as good as
            // random: with the table every node is counted without a branch.
            for (u, &c) in units.iter_mut().zip(p.cands) {
                let m = self.mask[c] & take;
                if sums.is_some() || m != 0 {
                    *u -= Self::units(p, sums, m);
                }
            }
            used.push(node);
        }
        let left = (0..p.need.len())
            .map(|l| if open & (1 << l) != 0 { p.need[l] } else { 0 })
            .collect();
        Solution {
            placed,
            left,
            used,
            cost: 0.0,
        }
    }
}

fn greedy_by_cover(p: &Problem) -> Solution {
    let mut left = p.need.to_vec();
    let mut run = vec![0i64; p.skus];
    let mut used: Vec<usize> = Vec::new();
    let mut placed = Vec::new();
    let mut taken = Vec::new();
    while used.len() < p.max_shipments && left.iter().any(|l| *l > 0) {
        let mut best: Option<(usize, i64, f64)> = None;
        for &c in p.cands {
            if used.contains(&c) {
                continue;
            }
            let (units, cost) = cover(p, c, &left, &mut run, |_, _| {});
            if units > 0 && best.is_none_or(|(_, u, bc)| units > u || (units == u && cost < bc)) {
                best = Some((c, units, cost));
            }
        }
        let Some((c, _, _)) = best else { break };
        taken.clear();
        cover(p, c, &left, &mut run, |l, q| taken.push((l, q)));
        for &(line, quantity) in &taken {
            left[line] -= quantity;
            placed.push(Placed {
                line,
                node: c,
                quantity,
            });
        }
        used.push(c);
    }
    Solution {
        placed,
        left,
        used,
        cost: 0.0,
    }
}

/// Units of `sku` a node still has after the placements.
fn free(p: &Problem, placed: &[Placed], node: usize, sku: usize) -> i64 {
    p.stock.get(sku, node)
        - placed
            .iter()
            .filter(|x| x.node == node && p.sku_of[x.line] == sku)
            .map(|x| x.quantity)
            .sum::<i64>()
}

/// Local search over whole-line placements: drop a node whose lines fit on
/// the other used nodes; swap a node for an unused cheaper one that can
/// carry all its lines. Each accepted step lowers (shipments, cost), so it
/// ends. With `whole` (whole lines, one SKU each, no penalties) a node's
/// free stock for a line is what it held, so its mask answers "can it
/// carry these lines" at once.
fn improve(p: &Problem, whole: Option<&WholeLines>, s: &mut Solution) {
    let mut changed = true;
    let mut rounds = 0;
    // Scratch space reused by every step (this runs per decision).
    let (mut trial, mut moving, mut lines, mut want) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while changed && rounds < 8 {
        changed = false;
        rounds += 1;
        // Drop, most expensive first.
        let mut order = s.used.clone();
        order.sort_by(|a, b| p.score[*b].total_cmp(&p.score[*a]));
        for u in order {
            if s.used.len() <= 1 {
                break;
            }
            trial.clear();
            trial.extend(s.placed.iter().filter(|x| x.node != u).copied());
            moving.clear();
            moving.extend(s.placed.iter().filter(|x| x.node == u).copied());
            let mut ok = true;
            for m in &moving {
                let sku = p.sku_of[m.line];
                let fits = |v: usize| match whole {
                    Some(w) => w.mask[v] & (1 << m.line) != 0,
                    None => free(p, &trial, v, sku) >= m.quantity,
                };
                let target = s
                    .used
                    .iter()
                    .copied()
                    .filter(|&v| v != u && fits(v))
                    .min_by(|a, b| p.pen(*a, sku).total_cmp(&p.pen(*b, sku)));
                match target {
                    Some(v) => trial.push(Placed { node: v, ..*m }),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                std::mem::swap(&mut s.placed, &mut trial);
                s.used.retain(|&v| v != u);
                changed = true;
            }
        }
        // Swap for a cheaper node carrying the same lines.
        for ui in 0..s.used.len() {
            let u = s.used[ui];
            lines.clear();
            lines.extend(s.placed.iter().filter(|x| x.node == u).copied());
            let line_mask = lines.iter().fold(0u64, |m, x| m | 1 << x.line);
            want.clear();
            if whole.is_none() {
                want.resize(p.skus, 0i64);
                for x in &lines {
                    want[p.sku_of[x.line]] += x.quantity;
                }
            }
            let cost_at = |n: usize| {
                if p.penalties.is_empty() {
                    p.score[n]
                } else {
                    p.score[n]
                        + lines
                            .iter()
                            .map(|x| p.pen(n, p.sku_of[x.line]))
                            .sum::<f64>()
                }
            };
            let here = cost_at(u);
            let mut best: Option<(usize, f64)> = None;
            for &v in p.cands {
                let there = cost_at(v);
                if there >= here - 1e-12 || best.is_some_and(|(_, b)| there >= b) {
                    continue;
                }
                if s.used.contains(&v) {
                    continue;
                }
                // `v` is unused, so all its stock is free.
                let carries = match whole {
                    Some(w) => w.mask[v] & line_mask == line_mask,
                    None => want
                        .iter()
                        .zip(p.stock.at(v))
                        .all(|(w, have)| *w <= i64::from(*have)),
                };
                if carries {
                    best = Some((v, there));
                }
            }
            if let Some((v, _)) = best {
                for x in s.placed.iter_mut().filter(|x| x.node == u) {
                    x.node = v;
                }
                s.used[ui] = v;
                changed = true;
            }
        }
    }
}

/// The optimum by enumeration, for small problems without line splits:
/// (shipments, cost) of the best plan that places every unit, or None when
/// no such plan exists within the shipment limit.
pub fn exhaustive(p: &Problem) -> Option<(usize, f64)> {
    let lines: Vec<usize> = (0..p.need.len()).filter(|l| p.need[*l] > 0).collect();
    let max = p.max_shipments.min(lines.len()).min(p.cands.len());
    for k in 1..=max {
        let mut best: Option<f64> = None;
        let mut subset = Vec::with_capacity(k);
        subsets(p.cands, k, 0, &mut subset, &mut |nodes| {
            let mut taken = vec![0i64; p.skus * nodes.len()];
            let mut count = vec![0usize; nodes.len()];
            assign(p, &lines, 0, nodes, &mut taken, &mut count, 0.0, &mut best);
        });
        if let Some(c) = best {
            return Some((k, c));
        }
    }
    None
}

fn subsets(
    cands: &[usize],
    k: usize,
    from: usize,
    cur: &mut Vec<usize>,
    f: &mut dyn FnMut(&[usize]),
) {
    if cur.len() == k {
        f(cur);
        return;
    }
    for i in from..cands.len() {
        cur.push(cands[i]);
        subsets(cands, k, i + 1, cur, f);
        cur.pop();
    }
}

#[allow(clippy::too_many_arguments)]
fn assign(
    p: &Problem,
    lines: &[usize],
    at: usize,
    nodes: &[usize],
    taken: &mut [i64],
    count: &mut [usize],
    pen: f64,
    best: &mut Option<f64>,
) {
    if at == lines.len() {
        // Every node of the subset must ship; smaller subsets were tried.
        if count.iter().all(|c| *c > 0) {
            let cost = nodes.iter().map(|n| p.score[*n]).sum::<f64>() + pen;
            if best.is_none_or(|b| cost < b) {
                *best = Some(cost);
            }
        }
        return;
    }
    let l = lines[at];
    let sku = p.sku_of[l];
    for (i, &n) in nodes.iter().enumerate() {
        let slot = sku * nodes.len() + i;
        if taken[slot] + p.need[l] <= p.stock.get(sku, n) {
            taken[slot] += p.need[l];
            count[i] += 1;
            assign(
                p,
                lines,
                at + 1,
                nodes,
                taken,
                count,
                pen + p.pen(n, sku),
                best,
            );
            taken[slot] -= p.need[l];
            count[i] -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers below `n` from a seeded linear congruential generator: the
    /// tests want repeatable problems, not good randomness.
    fn seeded(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut s = seed;
        move |n| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) % n
        }
    }

    fn stock(rows: &[&[i64]]) -> Stock {
        // rows[sku][node]
        let mut s = Stock::new(rows.len(), rows[0].len());
        for (k, r) in rows.iter().enumerate() {
            for (n, q) in r.iter().enumerate() {
                s.set(k, n, *q);
            }
        }
        s
    }

    fn problem<'a>(
        need: &'a [i64],
        sku_of: &'a [usize],
        skus: usize,
        cands: &'a [usize],
        score: &'a [f64],
        stock: &'a Stock,
    ) -> Problem<'a> {
        Problem {
            need,
            sku_of,
            skus,
            cands,
            score,
            stock,
            penalties: &[],
            penalty: 10.0,
            max_shipments: usize::MAX,
            line_split: false,
        }
    }

    #[test]
    fn one_node_with_everything_wins_even_when_dearer() {
        let st = stock(&[&[5, 5, 0], &[5, 0, 5]]);
        let score = [0.9, 0.0, 0.0];
        let p = problem(&[1, 1], &[0, 1], 2, &[0, 1, 2], &score, &st);
        let s = solve(&p);
        assert_eq!(s.used, [0]);
        assert_eq!(exhaustive(&p), Some((1, 0.9)));
    }

    #[test]
    fn splits_over_the_fewest_cheapest_nodes() {
        // Nobody has both SKUs; nodes 1 and 3 are cheapest per SKU.
        let st = stock(&[&[5, 5, 0, 0], &[0, 0, 5, 5]]);
        let score = [0.5, 0.1, 0.7, 0.2];
        let p = problem(&[2, 3], &[0, 1], 2, &[0, 1, 2, 3], &score, &st);
        let s = solve(&p);
        let mut used = s.used.clone();
        used.sort();
        assert_eq!(used, [1, 3]);
        assert!((s.cost - 0.3).abs() < 1e-9);
        let (n, c) = exhaustive(&p).unwrap();
        assert_eq!(n, 2);
        assert!((c - 0.3).abs() < 1e-9);
    }

    #[test]
    fn the_shipment_limit_leaves_units_unplaced() {
        let st = stock(&[&[5, 0], &[0, 5]]);
        let score = [0.0, 0.0];
        let mut p = problem(&[1, 1], &[0, 1], 2, &[0, 1], &score, &st);
        p.max_shipments = 1;
        let s = solve(&p);
        assert_eq!(s.used.len(), 1);
        assert_eq!(s.left.iter().sum::<i64>(), 1);
        assert_eq!(exhaustive(&p), None);
    }

    #[test]
    fn line_split_spreads_one_line_over_nodes() {
        let st = stock(&[&[3, 4]]);
        let score = [0.0, 0.5];
        let mut p = problem(&[6], &[0], 1, &[0, 1], &score, &st);
        let whole = solve(&p);
        assert_eq!(whole.left, [6], "without line split no node holds 6");
        p.line_split = true;
        let s = solve(&p);
        assert_eq!(s.left, [0]);
        let mut q: Vec<(usize, i64)> = s.placed.iter().map(|x| (x.node, x.quantity)).collect();
        q.sort();
        assert_eq!(q, [(0, 2), (1, 4)]);
    }

    #[test]
    fn whole_lines_choose_and_improve_as_the_cover_does() {
        // Seeded pseudo-random problems: 12 nodes, 1 to 20 lines of distinct
        // SKUs, sparse stock, ties in score.
        let mut next = seeded(7);
        for _ in 0..500 {
            let lines = 1 + next(20) as usize;
            // Past 64 candidates the greedy counts units from its table.
            let nodes = if next(4) == 0 { 90 } else { 12 };
            let rows: Vec<Vec<i64>> = (0..lines)
                .map(|_| (0..nodes).map(|_| next(4) as i64).collect())
                .collect();
            let rows: Vec<&[i64]> = rows.iter().map(|r| r.as_slice()).collect();
            let st = stock(&rows);
            let need: Vec<i64> = (0..lines).map(|_| next(3) as i64).collect();
            // Lines in SKU order, or in the reverse order.
            let mut sku_of: Vec<usize> = (0..lines).collect();
            if next(2) == 0 {
                sku_of.reverse();
            }
            let score: Vec<f64> = (0..nodes).map(|_| next(5) as f64 / 4.0).collect();
            let cands: Vec<usize> = (0..nodes).filter(|_| next(5) > 0).collect();
            let mut p = problem(&need, &sku_of, lines, &cands, &score, &st);
            p.max_shipments = 1 + next(4) as usize;
            let whole = WholeLines::of(&p).expect("whole lines apply");
            let mut fast = whole.greedy(&p);
            let mut slow = greedy_by_cover(&p);
            assert_eq!(
                (&fast.placed, &fast.left, &fast.used),
                (&slow.placed, &slow.left, &slow.used)
            );
            // The local search and the single-node check read the masks
            // the same way as they read the stock.
            improve(&p, Some(&whole), &mut fast);
            improve(&p, None, &mut slow);
            assert_eq!(
                (&fast.placed, &fast.left, &fast.used),
                (&slow.placed, &slow.left, &slow.used)
            );
            let one = single_node(&p, Some(&whole)).map(|s| (s.used, s.cost));
            let by_stock = single_node(&p, None).map(|s| (s.used, s.cost));
            assert_eq!(one, by_stock);
        }
    }

    #[test]
    fn covered_reads_every_sku_as_a_compare_would() {
        let mut next = seeded(11);
        let value = |r: u64| match r {
            0 => 0,
            1 => i32::MAX,
            r => (r % 5) as i32,
        };
        for n in 0..=70 {
            for _ in 0..20 {
                let want: Vec<i32> = (0..n).map(|_| value(next(9))).collect();
                let have: Vec<i32> = (0..n).map(|_| value(next(9))).collect();
                let expected = (0..n.min(64))
                    .filter(|&k| have[k] >= want[k])
                    .fold(0u64, |m, k| m | 1 << k);
                assert_eq!(covered(&want, &have), expected, "{n} SKUs");
            }
        }
    }

    #[test]
    fn byte_sums_count_the_units_of_a_mask_as_its_bits_do() {
        let mut next = seeded(5);
        let st = stock(&[&[0]]);
        for lines in 1..=64usize {
            let need: Vec<i64> = (0..lines).map(|_| next(3) as i64).collect();
            let sku_of: Vec<usize> = (0..lines).collect();
            let p = problem(&need, &sku_of, lines, &[], &[], &st);
            let sums = WholeLines::byte_sums(&need);
            for _ in 0..50 {
                let all = if lines == 64 {
                    u64::MAX
                } else {
                    (1 << lines) - 1
                };
                let mask = (0..64).fold(0u64, |m, b| m | next(2) << b) & all;
                assert_eq!(
                    WholeLines::units(&p, Some(&sums), mask),
                    WholeLines::units(&p, None, mask),
                    "{lines} lines, mask {mask:b}"
                );
            }
        }
    }

    #[test]
    fn a_penalised_node_is_avoided_when_another_can_ship() {
        let st = stock(&[&[5, 5]]);
        let score = [0.0, 0.5];
        let mut p = problem(&[1], &[0], 1, &[0, 1], &score, &st);
        let pens = [(0usize, 0usize)];
        p.penalties = &pens;
        assert_eq!(solve(&p).used, [1]);
    }
}
