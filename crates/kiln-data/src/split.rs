//! Deterministic stratified splits: each class is shuffled with the seed and cut by the
//! fractions, so every split keeps the class balance (datasets stored sorted by label, like
//! microsoft/cats_vs_dogs, would otherwise put one class in the test set).

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::{DataError, ImageDataset};

/// Row indices of each split, in `fractions` order; the fractions must sum to 1 (within
/// 1e-6). Within a split, rows keep dataset order. Every row lands in exactly one split.
pub fn stratified_split(
    labels: &[u32],
    fractions: &[f64],
    seed: u64,
) -> Result<Vec<Vec<usize>>, DataError> {
    let total: f64 = fractions.iter().sum();
    if fractions.is_empty()
        || fractions.iter().any(|f| !(0.0..=1.0).contains(f))
        || (total - 1.0).abs() > 1e-6
    {
        return Err(DataError::Transform(format!(
            "split fractions {fractions:?} must each be in [0, 1] and sum to 1 (e.g. [0.8, 0.1, 0.1])"
        )));
    }
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (row, &label) in labels.iter().enumerate() {
        by_class[label as usize].push(row);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut splits: Vec<Vec<usize>> = vec![Vec::new(); fractions.len()];
    for rows in &mut by_class {
        rows.shuffle(&mut rng);
        // Cumulative rounding: the counts sum to the class size exactly.
        let mut start = 0;
        let mut cumulative = 0.0;
        for (split, fraction) in splits.iter_mut().zip(fractions) {
            cumulative += fraction;
            let end = ((cumulative * rows.len() as f64).round() as usize).min(rows.len());
            split.extend_from_slice(&rows[start..end.max(start)]);
            start = end.max(start);
        }
        if let Some(last) = splits.last_mut() {
            last.extend_from_slice(&rows[start..]);
        }
    }
    for split in &mut splits {
        split.sort_unstable();
    }
    Ok(splits)
}

impl ImageDataset {
    /// The dataset cut into stratified splits (see [`stratified_split`]). Like
    /// [`ImageDataset::subset`], the parts do not carry `skipped` or warnings: those describe
    /// the source read and are reported once, against the source split.
    pub fn split_stratified(
        &self,
        fractions: &[f64],
        seed: u64,
    ) -> Result<Vec<ImageDataset>, DataError> {
        let indices = stratified_split(&self.labels, fractions, seed)?;
        Ok(indices.iter().map(|rows| self.subset(rows)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_stratified_disjoint_and_deterministic() {
        // 100 cats then 60 dogs, stored sorted by label like cats_vs_dogs.
        let labels: Vec<u32> = std::iter::repeat_n(0, 100)
            .chain(std::iter::repeat_n(1, 60))
            .collect();
        let splits = stratified_split(&labels, &[0.8, 0.1, 0.1], 7).unwrap();
        let count =
            |split: &[usize], class: u32| split.iter().filter(|&&r| labels[r] == class).count();
        assert_eq!((count(&splits[0], 0), count(&splits[0], 1)), (80, 48));
        assert_eq!((count(&splits[1], 0), count(&splits[1], 1)), (10, 6));
        assert_eq!((count(&splits[2], 0), count(&splits[2], 1)), (10, 6));
        let mut all: Vec<usize> = splits.concat();
        all.sort_unstable();
        assert_eq!(all, (0..160).collect::<Vec<_>>());
        assert_eq!(
            splits,
            stratified_split(&labels, &[0.8, 0.1, 0.1], 7).unwrap()
        );
        assert_ne!(
            splits,
            stratified_split(&labels, &[0.8, 0.1, 0.1], 8).unwrap()
        );
    }

    #[test]
    fn bad_fractions_are_rejected_with_an_example() {
        let err = stratified_split(&[0, 1], &[0.8, 0.1], 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sum to 1"), "{err}");
        assert!(stratified_split(&[0, 1], &[1.5, -0.5], 1).is_err());
    }

    #[test]
    fn tiny_classes_still_cover_every_row() {
        let labels = [0, 1, 1, 2];
        let splits = stratified_split(&labels, &[0.8, 0.1, 0.1], 3).unwrap();
        assert_eq!(splits.iter().map(Vec::len).sum::<usize>(), 4);
    }
}
