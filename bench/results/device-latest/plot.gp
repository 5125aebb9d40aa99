set terminal pngcairo size 900,520 noenhanced font 'DejaVu Sans,10'
set datafile separator '|'
set style fill solid 0.85 border -1
set grid ytics lc rgb '#dddddd'
set key top left
set xrange [0.4:5.6]
set bmargin 4
$throughput << EOD
1|etcd WAL\npattern|7215.1|6367.6|8023.2|0x888888|7,215
2|fio io_uring\ndsync QD1|9697.5|9605.7|10295.1|0x3b75af|9,697
3|fio io_uring\ndsync QD32|73987.6|72465.7|75147.0|0x3b75af|73,988
4|nvkv\n1 appender|9433.9|7897.3|9584.6|0x2e9e44|9,434
5|nvkv\n64 appenders|230599.0|189392.4|237042.0|0x2e9e44|230,599
EOD
$latency << EOD
1|etcd WAL\npattern|134.14|125.44|142.34|226.30|205.82|268.29|134.1|226.3
2|fio io_uring\ndsync QD1|93.70|91.65|99.84|179.20|162.82|183.30|93.7|179.2
3|fio io_uring\ndsync QD32|411.65|403.46|415.74|962.56|872.45|978.94|411.6|962.6
4|nvkv\n1 appender|99.84|97.15|119.17|177.41|175.10|227.97|99.8|177.4
5|nvkv\n64 appenders|264.96|257.41|304.13|428.80|423.17|600.06|265.0|428.8
EOD
set output 'throughput.png'
set title 'Durable writes per second (median of 3, bars min–max; file target; 2026-11-24T13:34:24Z)'
set ylabel 'ops/s'
set yrange [0:272598]
set format y "%'.0f"
unset key
plot $throughput using 1:3:(0.6):6:xtic(2) with boxes lc rgb variable, '' using 1:4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black', '' using 1:5:7 with labels offset 0,0.8
set output 'latency.png'
set title 'Latency per durable write, p50 and p99 (median of 3, bars min–max; file target; 2026-11-24T13:34:24Z)'
set ylabel 'µs (log scale)'
set logscale y
set yrange [45.824:2936.832]
set format y '%g'
set key top left
plot $latency using ($1-0.19):3:(0.36):xtic(2) with boxes lc rgb '0x3b75af' title 'p50', '' using ($1+0.19):6:(0.36) with boxes lc rgb '0xd9822b' title 'p99', '' using ($1-0.19):4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, '' using ($1+0.19):7:(0):($8-$7) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, '' using ($1-0.19):(68.736):9 with labels font ',8' tc rgb 'white' notitle, '' using ($1+0.19):(68.736):10 with labels font ',8' tc rgb 'white' notitle
