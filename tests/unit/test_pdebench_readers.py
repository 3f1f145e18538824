import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ups.data.params import parse_params_from_name
from ups.data.pdebench import PDEBenchFile
from ups.errors import DataError

# ---- parameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("1D_Burgers_Sols_Nu0.01.hdf5", {"nu": 0.01}),
        ("1D_Advection_Sols_beta0.4.hdf5", {"beta": 0.4}),
        ("ReacDiff_Nu0.5_Rho1.0.hdf5", {"nu": 0.5, "rho": 1.0}),
        ("2D_DarcyFlow_beta1.0_Train.hdf5", {"beta": 1.0}),
        ("1D_CFD_Rand_Eta0.01_Zeta0.01_periodic_Train.hdf5", {"eta": 0.01, "zeta": 0.01, "periodic": 1.0}),
        ("1D_CFD_Shock_Eta1.e-8_Zeta1.e-8_trans_Train.hdf5", {"eta": 1e-8, "zeta": 1e-8, "periodic": 0.0}),
        ("1D_Burgers_periodic_Nu0.1.hdf5", {"nu": 0.1}),
        ("1D_Burgers_Sols_Nu1e-3.hdf5", {"nu": 1e-3}),
        ("2D_CFD_Rand_M0.1_Eta1.E-8_periodic_128_Train.hdf5", {"m": 0.1, "eta": 1e-8, "periodic": 1.0}),
        ("2D_diff-react_NA_NA.h5", {}),
    ],
)
def test_parse_params_from_name(name, expected):
    assert parse_params_from_name(name) == pytest.approx(expected)


def test_params_name_then_attrs_then_override(reacdiff_attrs):
    assert PDEBenchFile(reacdiff_attrs.path).info.params == {"nu": 0.5, "rho": 2.0, "k": 3.0}
    f = PDEBenchFile(reacdiff_attrs.path, params_override={"Rho": 7.0, "extra": 1})
    assert f.info.params == {"nu": 0.5, "rho": 7.0, "k": 3.0, "extra": 1.0}


def test_multigroup_group_attrs_constant_and_varying(multigroup_2d):
    f = PDEBenchFile(multigroup_2d.path)
    assert f.info.params == {"du": 0.1}
    assert f.info.varying_params == ("amp",)
    assert f.params_of(3) == {"du": 0.1, "amp": 3.0}
    g = PDEBenchFile(multigroup_2d.path, params_override={"amp": 9.0})
    assert g.params_of(3)["amp"] == 9.0 and g.info.varying_params == ()


# ---- layouts and values --------------------------------------------------------------


def test_single_1d_values_times_and_t_plus_one(burgers_1d):
    f = PDEBenchFile(burgers_1d.path)
    info = f.info
    assert (info.layout, info.kind, info.n_samples, info.n_times) == ("single", "transient", 10, 6)
    assert info.spatial_shape == (16,) and info.n_channels == 1
    traj = f.trajectory(4)
    assert traj.dtype == np.float32 and traj.shape == (6, 16, 1)
    np.testing.assert_array_equal(traj[..., 0], burgers_1d.arrays["tensor"][4])
    np.testing.assert_array_equal(f.times(), burgers_1d.arrays["t-coordinate"][:6])
    np.testing.assert_array_equal(f.coordinates()[:, 0], burgers_1d.arrays["x-coordinate"])


def test_single_1d_downsampled_by_two(burgers_1d):
    f = PDEBenchFile(burgers_1d.path, reduced_resolution=2, reduced_resolution_t=2)
    assert f.info.n_times == 3 and f.info.spatial_shape == (8,)
    np.testing.assert_array_equal(f.trajectory(7)[..., 0], burgers_1d.arrays["tensor"][7, ::2, ::2])
    np.testing.assert_array_equal(f.times(), burgers_1d.arrays["t-coordinate"][:6:2])
    np.testing.assert_array_equal(f.coordinates()[:, 0], burgers_1d.arrays["x-coordinate"][::2])


def test_single_2d_downsampled(single_2d):
    f = PDEBenchFile(single_2d.path, reduced_resolution=2, reduced_resolution_t=2)
    assert f.info.spatial_shape == (8, 6) and f.info.n_channels == 1
    traj = f.trajectory(2)
    assert traj.shape == (3, 8, 6, 1)
    np.testing.assert_array_equal(traj[..., 0], single_2d.arrays["tensor"][2, ::2, ::2, ::2])
    coords = f.coordinates()
    assert coords.shape == (8, 6, 2)
    np.testing.assert_array_equal(coords[:, 3, 0], single_2d.arrays["x-coordinate"][::2])
    np.testing.assert_array_equal(coords[5, :, 1], single_2d.arrays["y-coordinate"][::2])


def test_single_rank4_without_y_is_channels_last(tmp_path, pdebench_writers):
    w = pdebench_writers.single(tmp_path / "multi_channel.h5", (4, 5, 16, 3))
    f = PDEBenchFile(w.path)
    assert f.info.spatial_shape == (16,) and f.info.n_channels == 3
    np.testing.assert_array_equal(f.trajectory(1), w.arrays["tensor"][1])


def test_darcy_pairs(darcy_2d):
    f = PDEBenchFile(darcy_2d.path, reduced_resolution=2)
    info = f.info
    assert (info.layout, info.kind, info.n_times) == ("darcy", "steady", 1)
    assert info.spatial_shape == (8, 6)
    assert info.params == {"beta": 1.0}
    a, u = f.steady_pair(5)
    assert a.shape == u.shape == (8, 6, 1)
    np.testing.assert_array_equal(a[..., 0], darcy_2d.arrays["nu"][5, ::2, ::2])
    np.testing.assert_array_equal(u[..., 0], darcy_2d.arrays["tensor"][5, 0, ::2, ::2])
    with pytest.raises(DataError, match="steady_pair"):
        f.trajectory(0)


def test_multigroup_values_and_grid(multigroup_2d):
    f = PDEBenchFile(multigroup_2d.path, reduced_resolution=2, reduced_resolution_t=2)
    info = f.info
    assert (info.layout, info.n_samples, info.n_times) == ("multigroup", 10, 3)
    assert info.spatial_shape == (8, 6) and info.n_channels == 2
    np.testing.assert_array_equal(f.trajectory(9), multigroup_2d.arrays["data"][9, ::2, ::2, ::2])
    np.testing.assert_array_equal(f.times(), multigroup_2d.arrays["grid/t"][:6:2])
    np.testing.assert_array_equal(f.coordinates()[:, 0, 0], multigroup_2d.arrays["grid/x"][::2])


def test_multigroup_1d(tmp_path, pdebench_writers):
    w = pdebench_writers.multigroup(tmp_path / "1D_diff-sorp_NA_NA.h5", n=3, shape=(5, 16, 1))
    f = PDEBenchFile(w.path, layout="multigroup")
    assert f.info.spatial_shape == (16,) and f.coordinates().shape == (16, 1)
    np.testing.assert_array_equal(f.trajectory(2), w.arrays["data"][2])


@pytest.mark.parametrize(
    "fixture, layout",
    [
        ("burgers_1d", "single"),
        ("single_2d", "single"),
        ("darcy_2d", "darcy"),
        ("multigroup_2d", "multigroup"),
    ],
)
def test_layout_auto_detection(request, fixture, layout):
    assert PDEBenchFile(request.getfixturevalue(fixture).path).info.layout == layout


def test_missing_coordinates_fall_back_with_note(tmp_path, pdebench_writers):
    w = pdebench_writers.single(tmp_path / "bare.h5", (3, 4, 8), x=False, t_len=0)
    f = PDEBenchFile(w.path)
    np.testing.assert_allclose(f.coordinates()[:, 0], (np.arange(8) + 0.5) / 8)
    np.testing.assert_allclose(f.times(), np.linspace(0, 1, 4))
    assert any("x-coordinate" in n for n in f.info.notes)
    assert any("t-coordinate" in n for n in f.info.notes)


def test_negative_index_and_out_of_range(burgers_1d):
    f = PDEBenchFile(burgers_1d.path)
    np.testing.assert_array_equal(f.trajectory(-1)[..., 0], burgers_1d.arrays["tensor"][9])
    with pytest.raises(IndexError, match="N=10"):
        f.trajectory(10)


# ---- errors --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.hdf5"
    with pytest.raises(DataError, match=r"nope\.hdf5.*not found"):
        PDEBenchFile(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "fake.hdf5"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"fake\.hdf5.*not an HDF5 file"):
        PDEBenchFile(path)


def test_missing_tensor_key(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x-coordinate", data=np.zeros(4))
    with pytest.raises(DataError, match=r"empty\.h5.*cannot tell the layout.*x-coordinate"):
        PDEBenchFile(path)
    with pytest.raises(DataError, match=r"empty\.h5.*no dataset 'tensor'.*\[N, T, X\]"):
        PDEBenchFile(path, layout="single")


def test_darcy_missing_nu(burgers_1d):
    with pytest.raises(DataError, match=r"Burgers.*no dataset 'nu'"):
        PDEBenchFile(burgers_1d.path, layout="darcy")


def test_wrong_rank(tmp_path, pdebench_writers):
    w = pdebench_writers.single(tmp_path / "flat.h5", (3, 4, 8), x=False, t_len=0)
    with h5py.File(w.path, "a") as f:
        del f["tensor"]
        f.create_dataset("tensor", data=np.zeros((3, 4)))
    with pytest.raises(DataError, match=r"flat\.h5.*'tensor' has shape \(3, 4\) \(rank 2\)"):
        PDEBenchFile(w.path)


def test_darcy_shape_mismatch(tmp_path):
    path = tmp_path / "darcy_bad.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("nu", data=np.zeros((3, 8, 9)))
        f.create_dataset("tensor", data=np.zeros((3, 1, 8, 8)))
    with pytest.raises(DataError, match=r"darcy_bad\.h5.*'nu' has shape \(3, 8, 9\).*\(3, 8, 8\)"):
        PDEBenchFile(path)


def test_coordinate_length_mismatch(tmp_path, pdebench_writers):
    w = pdebench_writers.single(tmp_path / "coords.h5", (3, 4, 8), x=np.zeros(7))
    with pytest.raises(DataError, match=r"coords\.h5.*'x-coordinate' has length 7.*8 points"):
        PDEBenchFile(w.path)


def test_time_length_mismatch(tmp_path, pdebench_writers):
    w = pdebench_writers.single(tmp_path / "times.h5", (3, 4, 8), t_len=9)
    with pytest.raises(DataError, match=r"times\.h5.*'t-coordinate' has length 9.*4 or 5"):
        PDEBenchFile(w.path)


def test_multigroup_group_without_data(tmp_path, pdebench_writers):
    w = pdebench_writers.multigroup(tmp_path / "mg.h5", n=3, shape=(4, 8, 1))
    with h5py.File(w.path, "a") as f:
        del f["0001/data"]
    with pytest.raises(DataError, match=r"mg\.h5.*group '0001' has no dataset 'data'"):
        PDEBenchFile(w.path)


def test_downsampling_too_large(burgers_1d):
    with pytest.raises(DataError, match=r"Burgers.*reduced_resolution=17.*\(16,\)"):
        PDEBenchFile(burgers_1d.path, reduced_resolution=17)
    with pytest.raises(DataError, match=r"Burgers.*reduced_resolution_t=7.*T=6"):
        PDEBenchFile(burgers_1d.path, reduced_resolution_t=7)
    with pytest.raises(DataError, match=r"reduced_resolution=0"):
        PDEBenchFile(burgers_1d.path, reduced_resolution=0)


def test_unknown_forced_layout(burgers_1d):
    with pytest.raises(DataError, match=r"Burgers.*unknown layout 'zarr'"):
        PDEBenchFile(burgers_1d.path, layout="zarr")


def test_bad_override(burgers_1d):
    with pytest.raises(DataError, match=r"Burgers.*override nu='fast'"):
        PDEBenchFile(burgers_1d.path, params_override={"nu": "fast"})


# ---- lazy opening, pickling, workers -------------------------------------------------


def test_lazy_handle_not_pickled(burgers_1d):
    f = PDEBenchFile(burgers_1d.path)
    assert f._h5 is None  # validation closed the file
    first = f.trajectory(1)
    assert f._h5 is not None and f._h5.id.valid
    clone = pickle.loads(pickle.dumps(f))
    assert clone._h5 is None
    np.testing.assert_array_equal(clone.trajectory(1), first)
    assert clone.info == f.info


def test_handle_reopened_after_pid_change(burgers_1d, monkeypatch):
    f = PDEBenchFile(burgers_1d.path)
    f.trajectory(0)
    old = f._h5
    monkeypatch.setattr("ups.data.pdebench.os.getpid", lambda: -1)
    f.trajectory(0)
    assert f._h5 is not old and f._pid == -1


class _Trajectories(Dataset):
    def __init__(self, file):
        self.file = file

    def __len__(self):
        return self.file.info.n_samples

    def __getitem__(self, i):
        return torch.from_numpy(self.file.trajectory(i))


@pytest.mark.parametrize("fixture", ["burgers_1d", "multigroup_2d"])
def test_dataloader_workers_match_single_process(request, fixture):
    f = PDEBenchFile(request.getfixturevalue(fixture).path)
    f.trajectory(0)  # the parent holds an open handle before the workers fork
    serial = torch.cat(list(DataLoader(_Trajectories(f), batch_size=3, num_workers=0)))
    parallel = torch.cat(list(DataLoader(_Trajectories(f), batch_size=3, num_workers=2)))
    assert serial.shape[0] == 10
    torch.testing.assert_close(parallel, serial, rtol=0, atol=0)
