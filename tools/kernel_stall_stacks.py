"""Run by each kernel that `tools.run_notebooks` starts (`--IPKernelApp.exec_files`): a cell still
running after SD35_STALL_STACKS_AFTER seconds writes every thread's Python stack (faulthandler) to
the file SD35_STALL_STACKS_FILE, which the runner puts into its timeout error.

So a stall inside the kernel fails with its cause on record (where each thread waited), not only
its duration. (No file written while a cell ran past its timeout means the kernel was idle and the
wait was the runner's: that is how notebook 06's 120-600 s stalls were traced to a missed zmq
wake-up, see run_notebooks._sliced_poll_client. A file, not stderr: ipykernel does not forward the
kernel's own stderr under pytest.)
Not for readers' kernels: nothing in notebooks/ or helpers/ runs it.
"""


def _dump_stacks_of_stalled_cells() -> None:
    import faulthandler
    import os

    after = float(os.environ.get("SD35_STALL_STACKS_AFTER") or 0)
    path = os.environ.get("SD35_STALL_STACKS_FILE")
    shell = get_ipython()  # noqa: F821 (defined in the kernel that runs this file)
    if after <= 0 or not path or shell is None:
        return
    stacks = open(path, "w")  # noqa: SIM115 (open for the kernel's life: faulthandler writes to its descriptor)

    def arm(_info) -> None:
        stacks.seek(0)
        stacks.truncate()  # only the cell that stalls: an earlier cell's dump is not its cause
        faulthandler.dump_traceback_later(after, file=stacks)

    def disarm(_result) -> None:
        faulthandler.cancel_dump_traceback_later()

    shell.events.register("pre_run_cell", arm)
    shell.events.register("post_run_cell", disarm)


_dump_stacks_of_stalled_cells()
del _dump_stacks_of_stalled_cells
