"""Chain methods declared by their kernels: ``samplax.sample(target, "<kernel>")`` for every registered
kernel whose :class:`~samplax.mcmc.registry.KernelSpec` carries a
:class:`~samplax.mcmc.registry.ChainMethod`.

The method is assembled here from the declaration alone: options = the adapter
kind's options (:data:`samplax.adaptation.kinds.ADAPTER_KINDS`) updated by the
kernel's own (an option declared ``None`` is dropped); ``build`` = the kernel's
``init`` and ``build_kernel`` (options named like one of its structural arguments
are passed to it; ``settings["option_names"]`` maps an argument to an option of
another name) with the kind's adapter and the declared stats.  Adding a kernel
is therefore one module in ``samplax/mcmc/`` ending in one ``register_kernel`` line.
"""
from __future__ import annotations

from samplax.adaptation.kinds import ADAPTER_KINDS
from samplax.core.method import Algorithm, MethodSpec
from samplax.mcmc.registry import KernelSpec


def _bias(message):
    return None if message is None else (lambda options: message)


def kernel_options(kernel: KernelSpec) -> dict:
    """The options of ``kernel``'s chain method: its adapter kind's, then its own (``None`` drops one)."""
    decl = kernel.method
    out = dict(ADAPTER_KINDS.get(decl.adapter).options(kernel))
    for name, opt in decl.options.items():
        if opt is None:
            out.pop(name, None)
        else:
            out[name] = opt
    return out


def kernel_method_spec(kernel: KernelSpec) -> MethodSpec:
    """The :class:`~samplax.core.method.MethodSpec` of the chain method ``kernel`` declares."""
    decl = kernel.method
    if decl is None:
        raise ValueError(f"kernel {kernel.name!r} declares no chain method (KernelSpec.method is None)")
    kind = ADAPTER_KINDS.get(decl.adapter)
    options = kernel_options(kernel)
    renamed = decl.settings.get("option_names", {})  # build_kernel argument -> option name, where they differ
    structural = {a: renamed.get(a, a) for a in kernel.structural if renamed.get(a, a) in options}

    def build(logdensity_fn, dim, num_warmup, num_chains, **o):
        if dim < decl.min_dim:
            why = decl.settings.get("min_dim_reason")
            raise ValueError(f"method {kernel.name!r} needs a target of dimension >= {decl.min_dim}"
                             f"{f' ({why})' if why else ''}, got dim={dim}")

        def init(key, position):
            return kernel.init(key, position, logdensity_fn)

        step = kernel.build_kernel(logdensity_fn, **{a: o[n] for a, n in structural.items()})
        return Algorithm(init, step, kind.make(kernel, logdensity_fn, dim, num_warmup, num_chains, o), decl.stats)

    return MethodSpec(kernel.name, build, decl.description, options, gradient_based=kernel.gradient_based,
                      bias=_bias(decl.bias))
