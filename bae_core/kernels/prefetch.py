"""``prefetch_row(a, i)``: ask the CPU to start loading row ``i`` of the 2-D C-ordered
array ``a`` (its first two cache lines) into cache, from numba code. Kernels that touch
rows at random (one user per event) call it a few events ahead, so the memory latency
of several rows overlaps instead of adding up."""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

AHEAD = 16  # events ahead: about what the memory system keeps in flight


@intrinsic
def prefetch_row(typingctx, arr, idx):
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        stride0 = builder.extract_value(ary.strides, 0)
        base = builder.ptrtoint(ary.data, ir.IntType(64))
        addr = builder.add(base, builder.mul(args[1], stride0))
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32),
                                               ir.IntType(32)])
        try:
            fn = builder.module.get_global("llvm.prefetch.p0i8")
        except KeyError:
            fn = ir.Function(builder.module, fnty, name="llvm.prefetch.p0i8")
        i32 = ir.IntType(32)
        for off in (0, 64):  # write access, high locality, data cache
            p = builder.inttoptr(builder.add(addr, ir.Constant(ir.IntType(64), off)), i8p)
            builder.call(fn, [p, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
