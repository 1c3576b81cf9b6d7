function alive = hcWorkerAlive(folder)
    % HCWORKERALIVE  True when a worker serves FOLDER: its 'ready' file exists and is fresh (internal).
    %   A running worker refreshes FOLDER/ready every second (bridge/transport/worker.py), even while it
    %   computes; a file older than 15 s is left over from a worker that was killed.
    info = dir(fullfile(folder, 'ready'));
    alive = numel(info) == 1 && (now() - info.datenum) * 86400 < 15;
end
