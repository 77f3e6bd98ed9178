"""Cross-validation folds over the labelled cases of a dataset."""
from collections import Counter

import pytest

from tfuad.data.folds import cross_validation_folds, fold_table, labelled_cases
from tfuad.data.layouts import Dataset, Subject
from tfuad.data.splits import labelled_test_subjects, split_subjects
from tfuad.errors import ConfigError, DatasetError


def _dataset(n_cases=11, n_healthy=3, n_unlabelled=1):
    subjects = [Subject(f"case{i:02d}", {"flair": f"case{i:02d}_flair.nii.gz"},
                        lesion_mask=f"case{i:02d}_seg.nii.gz", split="train") for i in range(n_cases)]
    subjects += [Subject(f"healthy{i}", {"flair": f"h{i}.nii.gz"}, healthy=True) for i in range(n_healthy)]
    subjects += [Subject(f"unlabelled{i}", {"flair": f"u{i}.nii.gz"}) for i in range(n_unlabelled)]
    return Dataset("root", "manifest", subjects)


def _ids(fold, split):
    return {s.id for s in fold.subjects if s.split == split}


def test_every_labelled_case_is_tested_exactly_once_in_balanced_folds():
    ds = _dataset()
    folds = cross_validation_folds(ds, k=4, seed=3)
    assert len(folds) == 4
    tested = Counter(sid for fold in folds for sid in _ids(fold, "test"))
    assert set(tested) == {s.id for s in labelled_cases(ds)} and set(tested.values()) == {1}
    assert sorted(len(_ids(f, "test")) for f in folds) == [2, 3, 3, 3]       # 11 cases in 4 folds


def test_test_cases_never_train_or_calibrate_their_fold():
    ds = _dataset()
    for fold in cross_validation_folds(ds, k=4, seed=3, calib_per_fold=2, healthy_calib=1):
        test, train, calib = _ids(fold, "test"), _ids(fold, "train"), _ids(fold, "calib")
        assert not test & train and not test & calib and not train & calib
        labelled_calib = {sid for sid in calib if sid.startswith("case")}
        assert len(labelled_calib) == 2
        # every labelled case outside the test fold trains or calibrates
        assert {sid for sid in train | calib if sid.startswith("case")} == {
            s.id for s in labelled_cases(ds)} - test
        # healthy-only subjects: one calibrates, two train, none is tested
        assert len({sid for sid in calib if sid.startswith("healthy")}) == 1
        assert {sid for sid in train if sid.startswith("healthy")} | {sid for sid in calib if
                                                                      sid.startswith("healthy")} == {
            "healthy0", "healthy1", "healthy2"}
        assert fold.subject("unlabelled0").split is None
        assert fold.ids == ds.ids                                   # same subjects, same order


def test_folds_feed_the_existing_split_readers():
    fold = cross_validation_folds(_dataset(), k=4, seed=0)[1]
    assert {s.id for s in labelled_test_subjects(fold, log=lambda *_: None)} == _ids(fold, "test")
    assert {s.id for s in split_subjects(fold, "calib")} == _ids(fold, "calib")


def test_deterministic_for_a_seed():
    ds = _dataset()
    a = fold_table(cross_validation_folds(ds, k=3, seed=5, calib_per_fold=2))
    b = fold_table(cross_validation_folds(ds, k=3, seed=5, calib_per_fold=2))
    c = fold_table(cross_validation_folds(ds, k=3, seed=6, calib_per_fold=2))
    assert a == b and a != c
    assert {r["fold"] for r in a} == {0, 1, 2}


def test_original_dataset_is_left_unchanged():
    ds = _dataset()
    cross_validation_folds(ds, k=2)
    assert {s.split for s in ds.subjects if s.id.startswith("case")} == {"train"}


@pytest.mark.parametrize("kwargs, error", [
    ({"k": 12}, DatasetError),                    # 11 labelled cases
    ({"k": 1}, ConfigError),
    ({"k": 3, "seed": -1}, ConfigError),
    ({"k": 3, "healthy_calib": 4}, DatasetError),  # 3 healthy-only subjects
    ({"k": 3, "calib_per_fold": 8}, ConfigError),  # the largest fold leaves 7
    ({"k": 3, "calib_per_fold": 0}, ConfigError),  # nobody calibrates
])
def test_bad_requests_raise_typed_one_line_errors(kwargs, error):
    with pytest.raises(error) as err:
        cross_validation_folds(_dataset(), **kwargs)
    assert "\n" not in str(err.value)


def test_no_training_subject_left_is_refused():
    ds = _dataset(n_cases=2, n_healthy=0, n_unlabelled=0)
    with pytest.raises(ConfigError, match="no training subject"):
        cross_validation_folds(ds, k=2, calib_per_fold=1)
    fold = cross_validation_folds(_dataset(n_cases=2, n_healthy=1, n_unlabelled=0), k=2, calib_per_fold=1)[0]
    assert _ids(fold, "train") == {"healthy0"}
