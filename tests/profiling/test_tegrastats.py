"""tegrastats lines from several Jetson boards and JetPack releases, and malformed ones."""

from __future__ import annotations

import pytest

from memx.profiling.tegrastats import parse_line, summarize

AGX_ORIN = ("RAM 2454/30536MB (lfb 6779x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,"
            "0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.125C Tboard@32C "
            "SOC2@40.906C Tdiode@33.25C SOC0@41.062C CV1@-256C GPU@-256C tj@44.125C SOC1@40.812C CV2@-256C VDD_GPU_SOC 2378mW/2378mW "
            "VDD_CPU_CV 396mW/396mW VIN_SYS_5V0 3223mW/3223mW NC 0mW/0mW VDDQ_VDD2_1V8AO 302mW/302mW NC 0mW/0mW")
ORIN_NANO = ("12-23-2023 10:51:41 RAM 2169/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729,0%@729,0%@729,off,off] "
             "EMC_FREQ 0%@2133 GR3D_FREQ 37%@[305] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@47.312C soc2@46.125C "
             "soc0@46.593C gpu@46.375C tj@47.312C soc1@46.625C VDD_IN 4935mW/4935mW VDD_CPU_GPU_CV 515mW/515mW VDD_SOC 1446mW/1446mW")
ORIN_NX = ("RAM 3012/15388MB (lfb 1x4MB) SWAP 0/7694MB (cached 0MB) CPU [12%@1984,8%@1984,5%@1984,9%@1984,3%@1984,0%@1984,2%@1984,1%@1984] "
           "EMC_FREQ 21%@3199 GR3D_FREQ 99%@[918,918] VIC_FREQ 115 APE 174 cpu@55.5C soc2@52.1C soc0@53.2C gpu@57.9C tj@57.9C soc1@52.8C "
           "VDD_IN 14120mW/9876mW VDD_CPU_GPU_CV 7420mW/4110mW VDD_SOC 2780mW/2512mW")
XAVIER_NX = ("RAM 3338/7771MB (lfb 103x4MB) SWAP 0/3885MB (cached 0MB) CPU [2%@1190,1%@1190,0%@1190,1%@1190,off,off] EMC_FREQ 0%@1600 "
             "GR3D_FREQ 0%@114 APE 150 MTS fg 0% bg 0% AO@37.5C GPU@38C PMIC@50C AUX@37C CPU@39C thermal@37.95C VDD_IN 3596/3596 "
             "VDD_CPU_GPU_CV 523/523 VDD_SOC 1142/1142")
AGX_XAVIER_OLD = ("RAM 1902/15692MB (lfb 3133x4MB) SWAP 0/7846MB (cached 0MB) CPU [3%@1190,2%@1190,1%@1190,1%@1190,0%@1190,0%@1190,0%@1190,"
                  "0%@1190] EMC_FREQ 0% GR3D_FREQ 0% AO@34C GPU@34.5C Tdiode@36.25C PMIC@100C AUX@33.5C CPU@35.5C thermal@34.55C "
                  "Tboard@34C GPU 0/0 CPU 311/311 SOC 1245/1245 CV 0/0 VDDRQ 155/155 SYS5V 1971/1971")


def test_agx_orin():
    s = parse_line(AGX_ORIN)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (2454, 30536, 0)
    assert len(s.cpu_load) == 12 and s.cpu_load[0] == 1.0 and s.cpu_freq_mhz[0] == 729
    assert (s.emc_load, s.emc_freq_mhz, s.gpu_load, s.gpu_freq_mhz) == (0.0, 2133, 0.0, [0, 0])
    assert s.temperatures_c["CPU"] == 44.125 and s.temperatures_c["tj"] == 44.125
    assert "GPU" not in s.temperatures_c and "CV0" not in s.temperatures_c  # -256C: sensor off
    assert s.power_mw["VDD_GPU_SOC"] == 2378 and s.power_mw["VIN_SYS_5V0"] == 3223
    assert "RAM" not in s.power_mw and "SWAP" not in s.power_mw


def test_orin_nano_with_timestamp_and_offline_cores():
    s = parse_line(ORIN_NANO)
    assert s.timestamp == "12-23-2023 10:51:41"
    assert s.cpu_load == [2.0, 1.0, 0.0, 0.0, None, None] and s.cpu_freq_mhz[4] is None
    assert (s.gpu_load, s.gpu_freq_mhz) == (37.0, [305])
    assert s.power_mw == {"VDD_IN": 4935, "VDD_CPU_GPU_CV": 515, "VDD_SOC": 1446}
    assert s.temperatures_c["gpu"] == 46.375


def test_orin_nx_instant_and_average_power():
    s = parse_line(ORIN_NX)
    assert s.power_mw["VDD_IN"] == 14120 and s.power_avg_mw["VDD_IN"] == 9876
    assert (s.emc_load, s.gpu_load, s.gpu_freq_mhz) == (21.0, 99.0, [918, 918])


def test_xavier_rails_without_units_and_single_gpu_clock():
    s = parse_line(XAVIER_NX)
    assert s.power_mw == {"VDD_IN": 3596, "VDD_CPU_GPU_CV": 523, "VDD_SOC": 1142}
    assert (s.gpu_load, s.gpu_freq_mhz) == (0.0, [114])
    assert s.temperatures_c["PMIC"] == 50.0 and s.temperatures_c["thermal"] == 37.95
    old = parse_line(AGX_XAVIER_OLD)
    assert (old.emc_load, old.emc_freq_mhz, old.gpu_load, old.gpu_freq_mhz) == (0.0, None, 0.0, [])
    assert old.power_mw["CPU"] == 311 and old.power_mw["SYS5V"] == 1971 and old.power_mw["GPU"] == 0
    assert old.temperatures_c["CPU"] == 35.5  # CPU@35.5C is a temperature, CPU 311/311 a rail


@pytest.mark.parametrize("line", ["", "tegrastats: command not found", "RAM 2454/30536MB (lfb 6779x4MB)", "CPU [1%@729] EMC_FREQ 0%",
                                  "RAM abc/30536MB CPU [1%@729]", "\x00\x00garbage\xff"])
def test_malformed_lines_are_not_samples(line):
    assert parse_line(line) is None


def test_truncated_fields_do_not_break_the_rest():
    s = parse_line("RAM 100/200MB CPU [5%@100,weird,7%] GR3D_FREQ 50% VDD_IN 12")
    assert s.cpu_load == [5.0, None, 7.0] and s.cpu_freq_mhz == [100, None, None]
    assert s.gpu_load == 50.0 and s.power_mw == {}


def test_summary_over_a_run_with_malformed_lines():
    lines = [ORIN_NX, ORIN_NANO.replace("GR3D_FREQ 37%", "GR3D_FREQ 1%"), "", "not a line", ORIN_NX.replace("VDD_IN 14120mW", "VDD_IN 10000mW")]
    summary = summarize(lines)
    assert summary["samples"] == 3 and summary["malformed_lines"] == 1
    assert summary["gpu_load_pct"] == {"mean": pytest.approx((99 + 1 + 99) / 3), "max": 99.0}
    assert summary["power_mw"]["VDD_IN"] == {"mean": pytest.approx((14120 + 4935 + 10000) / 3), "max": 14120.0}
    assert summary["temperature_c"]["gpu"]["max"] == 57.9
    assert summarize([])["samples"] == 0
