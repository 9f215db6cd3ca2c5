"""Data sources on real files: local CSV and Parquet, the generator, and gs:// through a real GCS emulator.

The emulator (gcp-storage-emulator, pure Python) runs in this process on 127.0.0.1 on a free port, and
gcsfs talks HTTP to it exactly as it would to Google.
"""

import hashlib
import io
import socket
import time

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from mlops_local import sources
from mlops_framework.errors import MlopsError
from mlops_local.sources import CsvSource, ParquetSource, SyntheticSource
from mlops_local.synthetic import SCHEMA, generate_table

GEN = {"weeks": 4, "rows_per_week": 500, "seed": 7, "drift_from_week": 3}
BUCKET = "mlops-test"


@pytest.fixture(scope="module")
def table():
    return generate_table(**GEN)


@pytest.fixture(scope="module")
def files(table, tmp_path_factory):
    """The same generated table as one CSV, one Parquet file and a directory of Parquet parts."""
    root = tmp_path_factory.mktemp("data")
    pacsv.write_csv(table, root / "loans.csv")
    pq.write_table(table, root / "loans.parquet", row_group_size=300)
    parts = root / "parts"
    parts.mkdir()
    for i, start in enumerate(range(0, table.num_rows, 700)):
        pq.write_table(table.slice(start, 700), parts / f"part-{i:03d}.parquet")
    (parts / "_SUCCESS").write_bytes(b"")  # what Spark leaves behind: skipped
    return root


def make(kind, files, **kwargs):
    if kind == "csv":
        return CsvSource(str(files / "loans.csv"), **kwargs)
    if kind == "parquet":
        return ParquetSource(str(files / "loans.parquet"), **kwargs)
    if kind == "parquet-dir":
        return ParquetSource(str(files / "parts"), **kwargs)
    if kind == "parquet-glob":
        return ParquetSource(str(files / "parts" / "*.parquet"), **kwargs)
    return SyntheticSource(**GEN, **kwargs)


KINDS = ["synthetic", "csv", "parquet", "parquet-dir", "parquet-glob"]


def one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# -- every kind ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_read_equals_the_generated_table_values_and_types(kind, files, table):
    df = make(kind, files).read()
    # A CSV file is read as it is: its types are sniffed, not the generator's (whole numbers are BIGINT)
    pd.testing.assert_frame_equal(df, table.to_pandas(), check_dtype=kind != "csv")
    assert df["COUNTY_NAME"].dtype == object and isinstance(df["COUNTY_NAME"].iloc[0], str)
    ints = ("int64", "int64") if kind == "csv" else ("int32", "int8")
    assert (str(df["WEEK"].dtype), str(df["MORTGAGERESPONSE"].dtype)) == ints
    assert str(df["TS"].dtype) == "datetime64[us]" and str(df["APPLICANT_INCOME_000S"].dtype) == "float64"


@pytest.mark.parametrize("kind", KINDS)
def test_where_filters_before_projection(kind, files, table):
    df = make(kind, files, where="WEEK BETWEEN 2 AND 3 AND LOAN_TYPE_NAME <> 'Conventional'").read(
        ["MORTGAGERESPONSE", "LOAN_ID"]
    )
    expected = table.to_pandas()
    expected = expected[expected.WEEK.between(2, 3) & (expected.LOAN_TYPE_NAME != "Conventional")]
    assert list(df.columns) == ["MORTGAGERESPONSE", "LOAN_ID"]  # in the order asked for
    pd.testing.assert_frame_equal(df, expected[["MORTGAGERESPONSE", "LOAN_ID"]].reset_index(drop=True),
                                  check_dtype=kind != "csv")


@pytest.mark.parametrize("kind", KINDS)
def test_batches_stream_the_same_rows_as_read(kind, files):
    source = make(kind, files, where="WEEK >= 2")
    batches = list(source.batches(columns=["LOAN_ID", "TS", "COUNTY_NAME"], batch_size=256))
    assert len(batches) > 3 and all(0 < b.num_rows <= 256 for b in batches)
    assert batches[0].schema == pa.schema([SCHEMA.field(c) for c in ("LOAN_ID", "TS", "COUNTY_NAME")])
    streamed = pa.Table.from_batches(batches).to_pandas()
    pd.testing.assert_frame_equal(streamed, source.read(["LOAN_ID", "TS", "COUNTY_NAME"]))


def test_batches_stream_without_building_the_whole_table():
    # 50 million rows (several GB) would take minutes of CPU to build; the first batch takes well under a
    # second. CPU time of this process, which other processes on a loaded machine do not inflate.
    source = SyntheticSource(weeks=10_000, rows_per_week=5_000)
    t0 = time.process_time()
    stream = source.batches(columns=["LOAN_ID"], batch_size=1000)
    first = next(stream)
    cpu = time.process_time() - t0
    stream.close()
    assert first.num_rows == 1000 and first.column(0)[0].as_py() == 1_000_000
    assert cpu < 3.0, f"first batch after {cpu:.1f} CPU s"


@pytest.mark.parametrize(
    "kind, expected",
    [("synthetic", 2000), ("parquet", 2000), ("parquet-dir", 2000), ("parquet-glob", 2000), ("csv", None)],
)
def test_count_rows(kind, expected, files):
    assert make(kind, files).count_rows() == expected
    if expected is not None:
        assert make(kind, files, where="WEEK = 4").count_rows() == 500


@pytest.mark.parametrize("kind", KINDS)
def test_errors_for_columns_and_where(kind, files):
    source = make(kind, files)
    with pytest.raises(MlopsError) as e:
        source.read(["LOAN_ID", "week"])
    one_line_error(e, "unknown column 'week'", "did you mean 'WEEK'", "available: WEEK_START_DATE, WEEK,")
    with pytest.raises(MlopsError) as e:
        source.batches(["NOPE"])  # raised at the call, before any iteration
    one_line_error(e, "unknown column 'NOPE'")
    with pytest.raises(MlopsError) as e:
        make(kind, files, where="WEKK <= 5").read()
    one_line_error(e, "bad where 'WEKK <= 5'", "WEKK", "available columns: WEEK_START_DATE")
    with pytest.raises(MlopsError) as e:
        make(kind, files, where="WEEK <=").read()
    one_line_error(e, "bad where 'WEEK <='")
    with pytest.raises(MlopsError) as e:
        make(kind, files, where="WEEK > 99").read()
    one_line_error(e, "no rows match where 'WEEK > 99'")
    with pytest.raises(MlopsError) as e:
        list(make(kind, files, where="WEEK > 99").batches())
    one_line_error(e, "no rows match where 'WEEK > 99'")
    with pytest.raises(MlopsError) as e:
        make(kind, files, where="CAST(COUNTY_NAME AS INTEGER) > 3").read()  # fails running, not binding
    one_line_error(e, "with where 'CAST(COUNTY_NAME AS INTEGER) > 3'", "Conversion Error")
    with pytest.raises(MlopsError, match="batch_size"):
        source.batches(batch_size=0)


def test_describe_is_one_line_naming_the_data(files):
    assert CsvSource("gs://b/loans.csv", delimiter=",", where="WEEK <= 5").describe() == (
        "CSV gs://b/loans.csv (delimiter ',') where WEEK <= 5"
    )
    assert CsvSource("x.csv").describe() == "CSV x.csv (delimiter sniffed)"
    assert ParquetSource("gs://b/p/*.parquet").describe() == "Parquet gs://b/p/*.parquet"
    assert SyntheticSource(drift_from_week=11, where="WEEK <= 5").describe() == (
        "synthetic mortgage data: 20 weeks x 5,000 rows from 2024-01-01, seed 0, "
        "drift from week 11 (strength 1.0) where WEEK <= 5"
    )
    assert CsvSource("/no/such/file.csv").describe()  # touches nothing


# -- fingerprints ----------------------------------------------------------------------------------


def test_file_fingerprint_is_the_sha256_of_the_bytes_and_follows_changes(tmp_path, table):
    path = tmp_path / "loans.csv"
    pacsv.write_csv(table, path)
    source = CsvSource(str(path))
    first = source.fingerprint()
    assert first == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert source.fingerprint() == first
    pacsv.write_csv(table.slice(1), path)
    assert source.fingerprint() != first
    assert CsvSource(str(path), where="WEEK = 1").fingerprint() not in (first, source.fingerprint())


def test_directory_fingerprint_changes_when_a_file_is_added(tmp_path, table):
    pq.write_table(table.slice(0, 100), tmp_path / "a.parquet")
    source = ParquetSource(str(tmp_path))
    before = source.fingerprint()
    assert before == ParquetSource(str(tmp_path / "*.parquet")).fingerprint()
    pq.write_table(table.slice(100, 100), tmp_path / "b.parquet")
    assert source.fingerprint() != before
    assert source.count_rows() == 200


def test_synthetic_fingerprint_follows_the_arguments():
    base = SyntheticSource(**GEN).fingerprint()
    assert base == SyntheticSource(**GEN).fingerprint()
    assert base.startswith("sha256:") and len(base) == 7 + 64
    others = {SyntheticSource(**{**GEN, "seed": 8}).fingerprint(),
              SyntheticSource(**{**GEN, "drift_strength": 0.5}).fingerprint(),
              SyntheticSource(**GEN, where="WEEK = 1").fingerprint()}
    assert base not in others and len(others) == 3


# -- CSV types and dialects ------------------------------------------------------------------------


def test_csv_types_are_sniffed_for_every_file_and_overridden_per_column(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text(
        "WEEK;COUNTY_NAME;FIPS;APPLICANT_INCOME_000S;MORTGAGERESPONSE;NOTE;TS\n"
        "1;001;053;85;1;a;20:15.4\n"
        "2;013;001;;0;b;21:15.4\n"
    )
    df = CsvSource(str(path)).read()
    assert df["COUNTY_NAME"].tolist() == ["001", "013"]  # leading zeros: the sniffer keeps text
    assert df["FIPS"].tolist() == ["053", "001"]
    assert df["TS"].tolist() == ["20:15.4", "21:15.4"]  # named like the demo's TIMESTAMP, read as it is
    assert str(df["APPLICANT_INCOME_000S"].dtype) == "float64"  # a whole number and a missing value
    assert df["APPLICANT_INCOME_000S"].isna().tolist() == [False, True]
    typed = CsvSource(str(path), types={"WEEK": "integer", "APPLICANT_INCOME_000S": "double",
                                        "TS": {"type": "timestamp", "format": "%M:%S.%f"}}).read()
    assert str(typed["WEEK"].dtype) == "int64" and str(typed["APPLICANT_INCOME_000S"].dtype) == "float64"
    assert typed["TS"].dt.minute.tolist() == [20, 21]
    explicit = CsvSource(str(path), delimiter=";", where="WEEK = 2").read(["NOTE"])
    assert explicit["NOTE"].tolist() == ["b"]
    wrong = CsvSource(str(path), delimiter=",").read()  # one column called by the whole header
    assert list(wrong.columns) == ["WEEK;COUNTY_NAME;FIPS;APPLICANT_INCOME_000S;MORTGAGERESPONSE;NOTE;TS"]


def test_csv_quirks_read_as_written(tmp_path):
    path = tmp_path / "quirks.csv"
    path.write_bytes(
        "\ufeffID,WHEN,DAY,FLAG,FLAG2,LABEL,SPECIES,INCOME,CAT\n"
        "17-000003,2017-01-01T06:00:42Z,2017-01-01,true,True,YES,setosa,12.5,x\n"
        "00012,2017-01-02T07:00:42+01:00,2017-01-02,false,False,NO,virginica,NA,\n"
        "17-000005,2017-01-03T06:00:42Z,2017-01-03,true,False,NO,setosa,,NA\n".encode())
    source = CsvSource(str(path))
    types = dict(source.schema())
    assert types == {"ID": "VARCHAR", "WHEN": "TIMESTAMP", "DAY": "DATE", "FLAG": "BOOLEAN", "FLAG2": "BOOLEAN",
                     "LABEL": "VARCHAR", "SPECIES": "VARCHAR", "INCOME": "DOUBLE", "CAT": "VARCHAR"}
    df = source.read()
    assert df["ID"].tolist() == ["17-000003", "00012", "17-000005"]  # the BOM is not part of the name
    assert df["WHEN"].astype(str).tolist() == ["2017-01-01 06:00:42", "2017-01-02 06:00:42", "2017-01-03 06:00:42"]  # UTC
    assert df["LABEL"].tolist() == ["YES", "NO", "NO"] and df["FLAG2"].tolist() == [True, False, False]
    assert df["INCOME"].isna().tolist() == [False, True, True] and df["CAT"].isna().tolist() == [False, True, True]
    kept = CsvSource(str(path), null_values=[""]).read()
    assert kept["CAT"].tolist()[1:] == [None, "NA"]


def test_csv_missing_values_as_excel_and_pandas_write_them_keep_a_column_numeric(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("INCOME,CITY\n12.5,Bern\n#N/A,nan\nn/a,Genf\n7,NaN\n")
    df = CsvSource(str(path)).read()
    assert str(df["INCOME"].dtype) == "float64" and df["INCOME"].isna().tolist() == [False, True, True, False]
    assert df["CITY"].isna().tolist() == [False, True, False, True]


def test_csv_with_a_space_after_each_delimiter_reads_values_without_it(tmp_path):
    """UCI's files (adult) write ``39, State-gov, <=50K``: the space is formatting, not part of the value."""
    path = tmp_path / "adult.csv"
    path.write_text("age, workclass, note, income\n39, State-gov, a b, <=50K\n50,  Private, , >50K\n")
    df = CsvSource(str(path)).read()
    assert list(df.columns) == ["age", "workclass", "note", "income"] and df["age"].tolist() == [39, 50]
    assert df["workclass"].tolist() == ["State-gov", "Private"] and df["income"].tolist() == ["<=50K", ">50K"]
    assert df["note"].tolist() == ["a b", ""]
    plain = tmp_path / "plain.csv"
    plain.write_text("age,workclass\n39, State-gov\n50,Private\n")
    assert CsvSource(str(plain)).read()["workclass"].tolist() == [" State-gov", "Private"]


def test_csv_numbers_with_placeholders_of_missing_values_are_numbers(tmp_path):
    """``?`` (UCI), ``-``, ``n/a``... among numbers: the column is numbers with those missing. Codes with
    leading zeros and text with a dash stay text; a word past the sampled rows is refused naming the column."""
    path = tmp_path / "auto.csv"
    rows = ["130,00012,A,1", "?,00034,-,0", " 95 ,?,B,1", "N/A,00056,A,0", "-,00078,B,1", "1e2,?,A,0"]
    path.write_text("horsepower,zip,grade,y\n" + "\n".join(rows) + "\n")
    source = CsvSource(str(path))
    assert dict(source.schema()) == {"horsepower": "DOUBLE", "zip": "VARCHAR", "grade": "VARCHAR", "y": "BIGINT"}
    df = source.read()
    assert [df["horsepower"][i] for i in (0, 2, 5)] == [130.0, 95.0, 100.0] and df["horsepower"].isna().sum() == 3
    assert df["zip"].tolist()[:2] == ["00012", "00034"] and df["grade"].tolist()[:2] == ["A", "-"]
    late = tmp_path / "late.csv"
    late.write_text("w,y\n" + "".join(f"{'?' if i % 9 == 0 else i},{i % 2}\n" for i in range(25_000)) + "heavy,1\n")
    with pytest.raises(MlopsError) as e:
        CsvSource(str(late)).read()
    one_line_error(e, "column w holds numbers and placeholders", "'heavy'", "data.types='{w: VARCHAR}'")
    assert CsvSource(str(late), types={"w": "VARCHAR"}).read()["w"].iloc[-1] == "heavy"


def test_csv_without_a_header_is_refused_saying_so_but_numbers_may_name_columns(tmp_path):
    import gzip

    headless = tmp_path / "headless.csv.gz"
    headless.write_bytes(gzip.compress(b"0,0,5.5,13,7,1\n0,1,12,13,8,1\n1,0,4,16,9,0\n"))
    with pytest.raises(MlopsError) as e:
        CsvSource(str(headless)).read()
    assert str(e.value) == (f"CSV {headless} has a line of numbers where its header should be (0, 0, 5.5, 13, 7, ...): "
                            "a CSV's first line names its columns")
    pair = tmp_path / "pair.csv"
    pair.write_text("1,2\n3,4\n")
    with pytest.raises(MlopsError, match=r"a line of numbers where its header should be \(1, 2\): a CSV"):
        CsvSource(str(pair)).read()
    for header in ("COUNTRY,2019,2020", "2019"):
        path = tmp_path / "years.csv"
        path.write_text(header + "\n" + "\n".join(",".join(["A", "1.5", "2"][-len(header.split(",")):]) for _ in range(3)))
        assert CsvSource(str(path)).read().columns.tolist() == header.split(",")


def test_csv_delimiter_is_the_header_lines_and_decimal_commas_only_count_where_commas_do_not_separate(tmp_path):
    cases = {
        "pipes.csv": "ID|NAME|SCORE\n1|a, b|1.5\n2|c|2.5\n",
        "tabs.tsv": "ID\tNAME\tSCORE\n1\ta; b\t1.5\n2\tc\t2.5\n",
        "names_with_marks.csv": "ID,NAME;LOCAL,SCORE|X\n1,a,1.5\n2,c,2.5\n",
        "titled.csv": "# report, 2024\nID;NAME;SCORE\n1;a;1,5\n2;c;2,5\n",
        "european.csv": "ID;NAME;SCORE\n1;a;1,5\n2;c;2,5\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        df = CsvSource(str(tmp_path / name)).read()
        assert df.shape == (2, 3) and df.iloc[:, 2].tolist() == [1.5, 2.5], name
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('ID,CODE\n1,"1,5"\n2,"2,5"\n')
    assert CsvSource(str(quoted)).read()["CODE"].tolist() == ["1,5", "2,5"]  # a comma file: text stays text


def test_csv_separated_by_single_spaces_as_r_writes_them(tmp_path):
    """R's write.table(sep=" "): no comma, semicolon, tab or pipe, one space between fields, strings quoted."""
    path = tmp_path / "anderson.csv"
    path.write_text('t status "cell type" logWBC\n35 0 "small cell" 1.45\n34 0 "large" 1.47\n32 1 NA 2.2\n')
    df = CsvSource(str(path)).read()
    assert df.columns.tolist() == ["t", "status", "cell type", "logWBC"]
    assert df["cell type"].tolist()[:2] == ["small cell", "large"] and df["logWBC"].tolist() == [1.45, 1.47, 2.2]
    for text in ("Miles per gallon\n21.0\n22.5\n", "a  b\n1  2\n"):  # one column; aligned columns: not this
        (tmp_path / "other.csv").write_text(text)
        assert len(CsvSource(str(tmp_path / "other.csv")).read().columns) == 1


def test_csv_utf8_with_a_character_cut_at_the_first_mib_stays_utf8(tmp_path):
    path = tmp_path / "long.csv"
    head = b"CITY,SCORE\n" + b"Bern,1\n" * 149_000
    pad = (1 << 20) - 2 - len(head)  # then "Z", then the two bytes of "ü" on either side of the first MiB's end
    data = head + b"x" * pad + "Zürich,2\n".encode()
    assert data[(1 << 20) - 1:(1 << 20) + 1] == "ü".encode()
    path.write_bytes(data)
    assert CsvSource(str(path)).read()["CITY"].iloc[-1] == "x" * pad + "Zürich"


def test_csv_in_latin1_or_utf16_reads_its_text_as_written(tmp_path):
    text = "CITY;SCORE\r\nZürich;1,5\r\nSão Paulo;2,25\r\nMalmö;NA\r\n"
    for encoding, given in (("latin-1", None), ("cp1252", "windows-1252"), ("utf-16", None), ("utf-8", "UTF8")):
        path = tmp_path / f"{encoding}.csv"
        path.write_bytes(text.encode(encoding))
        df = CsvSource(str(path), encoding=given).read()
        assert df["CITY"].tolist() == ["Zürich", "São Paulo", "Malmö"], encoding
        assert df["SCORE"].tolist()[:2] == [1.5, 2.25] and pd.isna(df["SCORE"][2]), encoding
    with pytest.raises(MlopsError, match="CSV encoding must be one of latin-1, utf-16, utf-8 or null, got 'ebcdic'"):
        CsvSource(str(tmp_path / "utf-8.csv"), encoding="ebcdic").read()


def test_csv_not_utf8_past_its_first_mib_names_the_encoding_option(tmp_path):
    path = tmp_path / "late.csv"
    path.write_bytes(b"CITY,SCORE\n" + b"Zurich,1\n" * 150_000 + "Malmö,2\n".encode("latin-1"))
    with pytest.raises(MlopsError) as e:
        CsvSource(str(path)).read()
    one_line_error(e, "not utf-8 encoded", "set data.encoding=latin-1")
    assert CsvSource(str(path), encoding="latin-1").read()["CITY"].iloc[-1] == "Malmö"


def test_csv_refuses_duplicate_names_and_short_lines_naming_them(tmp_path):
    twice = tmp_path / "twice.csv"
    twice.write_text("A,B,A\n1,2,3\n")
    with pytest.raises(MlopsError) as e:
        CsvSource(str(twice)).schema()
    one_line_error(e, "duplicate column names: 'A'")
    short = tmp_path / "short.csv"
    short.write_text("A,B,C\n1,x,2\n3,y,4\n5\n")
    with pytest.raises(MlopsError) as e:
        CsvSource(str(short)).read()
    one_line_error(e, "line 4 has 1 field(s) where the header has 3")


def test_csv_value_that_does_not_parse_names_the_column_and_the_override(tmp_path):
    path = tmp_path / "late.csv"
    path.write_text("A,B\n" + "".join(f"{i},{i}.5\n" for i in range(25_000)) + "17-000003,1.0\n")
    with pytest.raises(MlopsError) as e:
        CsvSource(str(path)).read()
    one_line_error(e, "column A (read as BIGINT)", '"17-000003"', "data.types='{A: VARCHAR}'")
    assert CsvSource(str(path), types={"A": "VARCHAR"}).read()["A"].iloc[-1] == "17-000003"
    for bad, needle in (({"NOPE": "int"}, "does not have"), ({"A": {"type": "int", "format": "%Y"}}, "date or timestamp"),
                        ("A", "must map column names")):
        with pytest.raises(MlopsError) as e:
            CsvSource(str(path), types=bad).schema()
        one_line_error(e, needle)


def test_where_may_compare_with_the_whole_table(files, table):
    df = make("csv", files, where="TS >= (SELECT quantile_disc(TS, 0.75) FROM data)").read(["TS"])
    assert len(df) == pytest.approx(table.num_rows / 4, abs=2)
    synthetic = SyntheticSource(**GEN, where="WEEK > (SELECT max(WEEK) - 1 FROM data)").read(["WEEK"])
    assert set(synthetic["WEEK"]) == {4}


# -- file errors -----------------------------------------------------------------------------------


def test_missing_and_empty_files(tmp_path):
    for source in (CsvSource(str(tmp_path / "nope.csv")), ParquetSource(str(tmp_path / "nope.parquet"))):
        with pytest.raises(MlopsError) as e:
            source.read()
        one_line_error(e, "file not found", str(tmp_path / "nope."))
        with pytest.raises(MlopsError, match="file not found"):
            source.fingerprint()
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "empty.parquet").write_bytes(b"")
    for source in (CsvSource(str(tmp_path / "empty.csv")), ParquetSource(str(tmp_path / "empty.parquet"))):
        with pytest.raises(MlopsError) as e:
            source.read()
        one_line_error(e, "empty file", str(tmp_path / "empty."))
    (tmp_path / "header.csv").write_text("WEEK,LOAN_ID\n")
    with pytest.raises(MlopsError) as e:
        CsvSource(str(tmp_path / "header.csv")).read()
    one_line_error(e, "no rows in CSV", "header.csv")
    pq.write_table(generate_table(weeks=1, rows_per_week=1).slice(0, 0), tmp_path / "none.parquet")
    with pytest.raises(MlopsError) as e:
        list(ParquetSource(str(tmp_path / "none.parquet")).batches())
    one_line_error(e, "no rows in Parquet", "none.parquet")
    assert ParquetSource(str(tmp_path / "none.parquet")).count_rows() == 0


def test_unreadable_files(tmp_path, table):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(MlopsError) as e:
        ParquetSource(str(corrupt)).read()
    one_line_error(e, "cannot read Parquet", str(corrupt), "corrupt")
    with pytest.raises(MlopsError) as e:
        ParquetSource(str(corrupt)).count_rows()
    one_line_error(e, str(corrupt))
    truncated = tmp_path / "truncated.parquet"
    pq.write_table(table, truncated)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(MlopsError) as e:
        ParquetSource(str(truncated)).read()
    one_line_error(e, "cannot read Parquet", str(truncated))
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("COUNTY_NAME,X\nDoña Ana County,1\n".encode("latin-1"))
    assert CsvSource(str(latin)).read()["COUNTY_NAME"].tolist() == ["Doña Ana County"]  # not UTF-8: Latin-1


def test_paths_that_name_no_file(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(MlopsError) as e:
        CsvSource(str(tmp_path / "dir")).read()
    one_line_error(e, "is a directory")
    with pytest.raises(MlopsError) as e:
        ParquetSource(str(tmp_path / "dir")).read()
    one_line_error(e, "no Parquet files in directory", str(tmp_path / "dir"))
    with pytest.raises(MlopsError) as e:
        ParquetSource(str(tmp_path / "dir" / "*.parquet")).read()
    one_line_error(e, "no Parquet files match")
    with pytest.raises(MlopsError, match="delimiter"):
        CsvSource(str(tmp_path / "x.csv"), delimiter=";;").read()
    with pytest.raises(MlopsError, match="weeks"):
        SyntheticSource(weeks=0).read()
    with pytest.raises(MlopsError, match="weeks"):
        SyntheticSource(weeks=0).count_rows()


# -- gs:// through a real GCS emulator -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(table):
    """A gcp-storage-emulator server in this process, with the demo table as CSV, Parquet and parts."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    env = pytest.MonkeyPatch()
    env.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        fs = sources._filesystem("gs")
        csv_bytes = io.BytesIO()
        pacsv.write_csv(table, csv_bytes)
        fs.pipe(f"{BUCKET}/loans.csv", csv_bytes.getvalue())
        for i, start in enumerate(range(0, table.num_rows, 900)):
            part = io.BytesIO()
            pq.write_table(table.slice(start, 900), part)
            fs.pipe(f"{BUCKET}/parts/part-{i}.parquet", part.getvalue())
        fs.pipe(f"{BUCKET}/empty.csv", b"")
        yield fs
    finally:
        env.undo()
        server.stop()


def test_gcs_filesystem_is_anonymous_against_the_emulator_and_skips_the_hns_probe(gcs, monkeypatch):
    assert gcs.credentials.method == "anon"
    assert gcs._location.startswith("http://127.0.0.1:")
    with gcs.open(f"{BUCKET}/loans.csv", "rb") as f:  # DuckDB leaves files open: no background prefetch
        assert type(f.cache).__name__ == "ReadAheadCache"
    monkeypatch.delenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", raising=False)
    sources._filesystem("gs")
    assert sources.os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"


def test_gcs_csv(gcs, table):
    source = CsvSource(f"gs://{BUCKET}/loans.csv")
    pd.testing.assert_frame_equal(source.read(), table.to_pandas(), check_dtype=False)  # types sniffed
    assert source.fingerprint() == "sha256:" + hashlib.sha256(gcs.cat(f"{BUCKET}/loans.csv")).hexdigest()
    filtered = CsvSource(f"gs://{BUCKET}/loans.csv", where="WEEK = 3")
    streamed = pa.Table.from_batches(list(filtered.batches(["LOAN_ID"], batch_size=128)))
    assert streamed.column("LOAN_ID").to_pylist() == list(range(1_001_000, 1_001_500))


@pytest.mark.parametrize("path", ["parts", "parts/", "parts/*.parquet"])
def test_gcs_parquet(gcs, table, path):
    source = ParquetSource(f"gs://{BUCKET}/{path}")
    pd.testing.assert_frame_equal(source.read(), table.to_pandas())
    assert source.count_rows() == 2000
    assert ParquetSource(f"gs://{BUCKET}/{path}", where="WEEK >= 3").count_rows() == 1000
    assert sum(b.num_rows for b in source.batches(batch_size=500)) == 2000


def test_gcs_fingerprint_follows_changes(gcs, table):
    path = f"{BUCKET}/changing.parquet"
    for rows in (10, 11):
        buf = io.BytesIO()
        pq.write_table(table.slice(0, rows), buf)
        gcs.pipe(path, buf.getvalue())
        source = ParquetSource(f"gs://{path}")
        assert source.fingerprint() == "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
        assert source.count_rows() == rows


def test_gcs_errors(gcs):
    cases = [
        (CsvSource(f"gs://{BUCKET}/nope.csv"), ["CSV file not found", f"gs://{BUCKET}/nope.csv"]),
        (CsvSource("gs://no-such-bucket/loans.csv"), ["file not found", "gs://no-such-bucket/loans.csv"]),
        (CsvSource(f"gs://{BUCKET}/empty.csv"), ["empty file", f"gs://{BUCKET}/empty.csv"]),
        (ParquetSource(f"gs://{BUCKET}/nope/*.parquet"), ["no Parquet files match"]),
        (ParquetSource(f"gs://{BUCKET}/loans.csv"), ["cannot read Parquet", f"gs://{BUCKET}/loans.csv"]),
        (CsvSource(f"gs://{BUCKET}/loans.csv", where="WEEK > 9"), ["no rows match where 'WEEK > 9'"]),
    ]
    for source, needles in cases:
        with pytest.raises(MlopsError) as e:
            source.read()
        one_line_error(e, *needles)


def test_gcs_unreachable_says_so(gcs, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_free_port()}")  # nothing listens
    monkeypatch.setattr(sources, "_REMOTE_TIMEOUT_S", 1.0)
    t0 = time.perf_counter()
    with pytest.raises(MlopsError) as e:
        CsvSource(f"gs://{BUCKET}/loans.csv").read()
    one_line_error(e, "cannot reach or authorise", f"gs://{BUCKET}/loans.csv", "storage emulator", "1 s")
    assert time.perf_counter() - t0 < 10


def test_unknown_protocol_and_missing_package():
    with pytest.raises(MlopsError) as e:
        CsvSource("nosuchproto://bucket/loans.csv").read()
    one_line_error(e, "nosuchproto")
