"""fsutil.remove: any tree goes, however deep, and nothing outside it does."""

from __future__ import annotations

import os

from bakery import fsutil


def test_a_tree_deeper_than_recursion_and_path_max_allow_is_removed(tmp_path, deep_chain):
    tree = tmp_path / "root"
    tree.mkdir()
    deep_chain(tree, 3000)  # 3000 levels of 200-byte names: 600 KB of path

    fsutil.remove(tree)

    assert not tree.exists()


def test_symlinks_inside_are_removed_and_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine\n")
    tree = tmp_path / "root"
    (tree / "a/b").mkdir(parents=True)
    (tree / "a/b/to-dir").symlink_to(outside)
    (tree / "a/to-file").symlink_to(outside / "keep")
    (tree / "a/b/c").mkdir()
    (tree / "a/b/c/f").write_text("x")

    fsutil.remove(tree)

    assert not tree.exists()
    assert (outside / "keep").read_text() == "mine\n"


def test_a_symlink_named_as_the_tree_is_removed_itself(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine\n")
    link = tmp_path / "root"
    link.symlink_to(outside)

    fsutil.remove(link)

    assert not os.path.lexists(link)
    assert (outside / "keep").exists()
