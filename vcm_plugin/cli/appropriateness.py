"""``vcm appropriateness``: task appropriateness ρ per layer of a task model, with t-SNE views."""

from __future__ import annotations

import argparse

from vcm_plugin.cli.common import parse_params


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm appropriateness``."""
    from vcm_plugin.analysis.rho import CI_METHODS, DEFAULT_ESTIMATOR, estimator_names

    p = sub.add_parser("appropriateness", help="task appropriateness ρ per layer of a task model, with t-SNE views")
    p.add_argument("--model", required=True, help="a registered task model, e.g. cifar10-vgg")
    p.add_argument("--layers", help="comma-separated cut points (default: all; see `vcm layers MODEL`)")
    p.add_argument("--dataset", required=True, help="a single-label dataset, e.g. cifar10")
    p.add_argument("--root", help="dataset folder (e.g. ../shared/data/cifar10)")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--max-images", type=int, help="use this many images (cifar10: class-balanced)")
    p.add_argument("--k", default="2,16,256", help="quantiser levels, comma-separated (default 2,16,256)")
    p.add_argument("--pca", type=int, default=64, help="PCA dims per layer before k-means (clamped; default 64)")
    p.add_argument("--bootstrap", type=int, default=20, help="bootstrap resamples for the 95%% CI (default 20)")
    p.add_argument("--ci", choices=CI_METHODS, default="percentile",
                   help="bootstrap interval: percentile (default) or basic (corrects the resampling bias)")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means, PCA, bootstrap and t-SNE (default 0)")
    p.add_argument("--estimator", default=DEFAULT_ESTIMATOR,
                   help=f"ρ estimator (registered: {', '.join(estimator_names())}; default {DEFAULT_ESTIMATOR})")
    p.add_argument("--output", "-o", default="appropriateness", help="output folder (default ./appropriateness)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="task-model parameter (repeatable)")
    p.add_argument("--tsne-samples", type=int, default=300, help="samples per t-SNE panel (0: no t-SNE; default 300)")
    p.add_argument("--threads", type=int, help="cap torch / BLAS / OpenMP threads (default: their own)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or table (log level WARNING)")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Compute ρ, write the reports and print the table."""
    from vcm_plugin.analysis.appropriateness import limit_threads, parse_ks, run_appropriateness

    limit_threads(args.threads)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    result = run_appropriateness(args.model, args.dataset, layers, args.root, args.split, args.max_images,
                                 parse_ks(args.k), args.pca, args.bootstrap, args.seed, args.estimator,
                                 args.output, parse_params(args.param), args.tsne_samples, args.ci)
    if not args.quiet:
        print(f"{'layer':<10}{'depth':>6}{'k':>6}{'rho':>9}{'95% CI':>20}{'chance':>10}")
        for r in result.rows:
            print(f"{r.layer:<10}{r.depth:>6}{r.k:>6}{r.rho:>9.4f}   [{r.ci_low:.4f}, {r.ci_high:.4f}]"
                  f"{r.rho_shuffled:>10.4f}")
        print(f"wrote {', '.join(result.files.values())} ({result.wall_s:.1f} s)")
    return 0
