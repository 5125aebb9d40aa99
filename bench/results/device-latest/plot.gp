set terminal pngcairo size 900,520 noenhanced font 'DejaVu Sans,10'
set datafile separator '|'
set style fill solid 0.85 border -1
set grid ytics lc rgb '#dddddd'
set key top left
set xrange [0.4:5.6]
set bmargin 4
$throughput << EOD
1|etcd WAL\npattern|7506.7|6100.4|7915.5|0x888888|7,507
2|fio io_uring\ndsync QD1|9964.6|8781.2|11001.2|0x3b75af|9,965
3|fio io_uring\ndsync QD32|82935.8|82731.9|88201.0|0x3b75af|82,936
4|nvkv\n1 appender|6110.7|6010.0|6285.4|0x2e9e44|6,111
5|nvkv\n64 appenders|193670.2|187825.3|200369.1|0x2e9e44|193,670
EOD
$latency << EOD
1|etcd WAL\npattern|132.10|124.42|150.53|232.45|226.30|280.58|132.1|232.4
2|fio io_uring\ndsync QD1|76.29|74.24|96.77|152.58|123.39|168.96|76.3|152.6
3|fio io_uring\ndsync QD32|362.50|342.02|366.59|733.18|651.26|749.57|362.5|733.2
4|nvkv\n1 appender|155.78|146.56|158.08|272.89|267.01|286.72|155.8|272.9
5|nvkv\n64 appenders|326.65|315.39|327.17|610.82|536.58|612.35|326.7|610.8
EOD
set output 'throughput.png'
set title 'Durable writes per second (median of 3, bars min–max; file target; 2026-11-24T12:23:57Z)'
set ylabel 'ops/s'
set yrange [0:230424]
set format y "%'.0f"
unset key
plot $throughput using 1:3:(0.6):6:xtic(2) with boxes lc rgb variable, '' using 1:4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black', '' using 1:5:7 with labels offset 0,0.8
set output 'latency.png'
set title 'Latency per durable write, p50 and p99 (median of 3, bars min–max; file target; 2026-11-24T12:23:57Z)'
set ylabel 'µs (log scale)'
set logscale y
set yrange [37.120:2248.704]
set format y '%g'
set key top left
plot $latency using ($1-0.19):3:(0.36):xtic(2) with boxes lc rgb '0x3b75af' title 'p50', '' using ($1+0.19):6:(0.36) with boxes lc rgb '0xd9822b' title 'p99', '' using ($1-0.19):4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, '' using ($1+0.19):7:(0):($8-$7) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, '' using ($1-0.19):(55.680):9 with labels font ',8' tc rgb 'white' notitle, '' using ($1+0.19):(55.680):10 with labels font ',8' tc rgb 'white' notitle
