"""`keras-mtl bench --streaming`: its shards and its pass over them (small; the figures come from
the full command)."""

import numpy as np
import pyarrow.parquet as pq

from keras_mtl.benchmarks import streaming


def test_shards_hold_the_rows_and_one_pass_reads_them_all(tmp_path):
    paths = streaming.write_shards(str(tmp_path), rows=2500, shard_rows=1000)
    assert [p.rsplit("/", 1)[-1] for p in paths] == [f"part-0000{i}.parquet" for i in range(3)]
    table = pq.read_table(paths[0])
    assert table.num_rows == 1000 and table.schema.field("hist").type.value_type.bit_width == 64
    buy = table.column("buy").to_numpy(zero_copy_only=False)
    assert np.isnan(buy[table.column("click").to_numpy() == 0]).all()  # off the click space
    result = streaming.stream(str(tmp_path), batch_size=256)
    assert result["rows"] == 2500 and result["examples_per_second"] > 0
    assert result["peak_resident_mib"] > 0 and result["vocabulary"]  # users seen twice or more
    table = streaming.format_markdown({"batch_size": 256, "step_examples_per_second": 1000.0,
                                       "runs": [{**result, "parquet_mib": 1.0,
                                                 "pipeline_over_step": 2.0}]})
    assert "| 2,500 |" in table
